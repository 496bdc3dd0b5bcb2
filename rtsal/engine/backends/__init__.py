"""Backends: one explanation graph (:mod:`rtsal.engine.graph`) run by one runtime each, behind one protocol.

A backend is built from a :class:`~rtsal.engine.spec.FastCAMSpec` for one input shape (plus the module,
where the runtime converts it), then called: ``run(x, target) -> GraphOutput`` (logits and the *small*
maps; :mod:`rtsal.engine.result` assembles the result), and ``close()``.

- ``torch``: the eager engine with hooks (:class:`~rtsal.engine.explainer.Explainer` itself): the reference,
  the fallback, and what serves the first frames while another backend builds.
- ``compiled``: the graph exported by ``torch.export`` and compiled by AOTInductor, built in a child
  process in the background (:mod:`.compiled`).
- ``onnxruntime``: the graph as ONNX, run by an ONNX Runtime CPU session (:mod:`.onnxruntime`).
- ``openvino``: the graph converted by ``openvino.convert_model``, compiled for the CPU; the compiled blob
  is cached (:mod:`.openvino`).

:class:`~rtsal.engine.backends.served.ServedBackend` serves each of them to an Explainer (built per input
shape, now or in the background while eager frames are served). ``auto`` picks the fastest installed
backend by the rule of :func:`resolve` (docs/backends.md has the measurements behind it).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Protocol

from rtsal.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor

    from rtsal.engine.graph import GraphOutput

__all__ = ["AUTO_ORDER", "BACKENDS", "Backend", "installed", "require", "resolve"]

BACKENDS = ("auto", "torch", "compiled", "onnxruntime", "openvino")
# what `auto` takes, first installed wins: the order of the explained Lite0/ResNet-50 medians at the default
# precision (f32) measured by benchmarks/backends.py on the quiet machine (docs/backends.md: compiled 8.5 /
# 41.0 ms, OpenVINO 10.9 / 52.4, ONNX Runtime 24.6 / 79.1), and of `rtsal video` on a 720p clip. The
# compiled backend counts as installed where a C++ compiler is (Inductor needs one)
AUTO_ORDER = ("compiled", "openvino", "onnxruntime", "torch")
GRAPH_BACKENDS = ("compiled", "onnxruntime", "openvino")  # the ones that build a graph (not eager)
# the Python package each backend needs, and the one line that says how to get it
EXTRAS = {
    "onnxruntime": ("onnxruntime", 'pip install "rtsal[onnx]"'),
    "openvino": ("openvino", 'pip install "rtsal[openvino]"'),
}


class Backend(Protocol):
    """A graph built for one input shape on one runtime."""

    name: str

    def run(self, x: Tensor, target: Tensor) -> GraphOutput:
        """``x`` (N, 3, h, w) preprocessed float32; ``target`` (N,) long, -1 = top-1."""
        ...

    def close(self) -> None:
        """Release the runtime's resources; later calls fail."""
        ...


def installed(name: str) -> bool:
    """Whether the package the backend ``name`` needs is importable (without importing it); ``compiled``:
    whether a C++ compiler is on the PATH (``$CXX``, ``c++``, ``g++`` or ``clang++``)."""
    if name == "compiled":
        import os
        import shutil

        return any(c and shutil.which(c) for c in (os.environ.get("CXX"), "c++", "g++", "clang++"))
    if name not in EXTRAS:
        return name in BACKENDS
    return importlib.util.find_spec(EXTRAS[name][0]) is not None


def require(name: str) -> None:
    """One line (UsageError, exit 2) naming the extra to install when ``name``'s runtime is missing. (The
    compiled backend without a C++ compiler is not refused here: its build fails with one line and the run
    serves eagerly.)"""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name in EXTRAS and not installed(name):
        package, fix = EXTRAS[name]
        raise UsageError(f"--backend {name} needs {package}, which is not installed: {fix}")


def resolve(name: str, image_model: bool = True, compile_allowed: bool = True) -> str:
    """The concrete backend for ``name``: ``auto`` is the first installed of :data:`AUTO_ORDER` for an image
    CNN (clips and transformers run eager), ``torch`` when graphs are not wanted (``compile_allowed``
    False: ``--no-compile``, ``RTSAL_COMPILE=0``, the comparison methods). Other names are checked and
    returned."""
    if name != "auto":
        require(name)
        return name
    if not image_model or not compile_allowed:
        return "torch"
    return next(b for b in AUTO_ORDER if installed(b))
