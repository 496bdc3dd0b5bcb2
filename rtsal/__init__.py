"""rtsal: real-time saliency overlays for PyTorch image classifiers.

``rtsal.Explainer`` runs one forward pass per frame and returns FastCAM's per-scale SMOE Scale maps, their
combination, a class activation map from the head, and their fusion. ``rtsal.export`` writes a model and
those maps as one ONNX graph (``pip install "rtsal[onnx]"``). Heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Explainer", "SaliencyResult", "RtsalError", "export", "__version__"]

if TYPE_CHECKING:
    from rtsal.deploy.onnx import export
    from rtsal.engine.explainer import Explainer
    from rtsal.errors import RtsalError
    from rtsal.types import SaliencyResult


def __getattr__(name: str) -> Any:
    if name == "Explainer":
        from rtsal.engine.explainer import Explainer

        return Explainer
    if name == "export":
        from rtsal.deploy.onnx import export

        return export
    if name == "SaliencyResult":
        from rtsal.types import SaliencyResult

        return SaliencyResult
    if name == "RtsalError":
        from rtsal.errors import RtsalError

        return RtsalError
    raise AttributeError(f"module 'rtsal' has no attribute {name!r}")
