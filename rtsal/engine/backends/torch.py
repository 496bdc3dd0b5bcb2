"""The torch backend: the spec's graph run eagerly by PyTorch (the reference the other backends match).

The :class:`~rtsal.engine.explainer.Explainer`'s own eager path (hooks on the serving model, the maths of
:mod:`rtsal.engine.saliency`) is what ``--backend torch`` runs; this class is the same graph behind the
backend protocol, for comparisons and tests.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from rtsal.engine.backends.common import graph_of
from rtsal.engine.graph import GraphOutput, clean_copy
from rtsal.engine.spec import FastCAMSpec

__all__ = ["TorchBackend"]


class TorchBackend:
    """``spec``'s graph over a hook-free copy of ``model``, eager, under ``inference_mode`` (closed-form
    heads) or ``no_grad`` (the traced head gradient)."""

    name = "torch"

    def __init__(self, spec: FastCAMSpec, model: nn.Module, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None, streams: int = 1) -> None:
        if spec.precision != "f32":
            raise ValueError("the torch backend runs f32 only")
        self.spec = spec
        self.graph = graph_of(spec, clean_copy(model).eval())
        self.source = "built"

    def run(self, x: Tensor, target: Tensor) -> GraphOutput:
        with torch.inference_mode():
            out = self.graph(x, target)
        return GraphOutput(*out[:5], tuple(out[5:]))

    def close(self) -> None:
        self.graph.close()
