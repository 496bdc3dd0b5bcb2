"""Export a classifier with its FastCAM maps as one ONNX graph, and run such a graph with ONNX Runtime.

Torch, onnx and onnxruntime load on first use; see :func:`rtsal.deploy.onnx.export` and
:class:`rtsal.deploy.runtime.OrtExplainer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["OrtExplainer", "export"]

if TYPE_CHECKING:
    from rtsal.deploy.onnx import export
    from rtsal.deploy.runtime import OrtExplainer


def __getattr__(name: str) -> Any:
    if name == "export":
        from rtsal.deploy.onnx import export

        return export
    if name == "OrtExplainer":
        from rtsal.deploy.runtime import OrtExplainer

        return OrtExplainer
    raise AttributeError(f"module 'rtsal.deploy' has no attribute {name!r}")
