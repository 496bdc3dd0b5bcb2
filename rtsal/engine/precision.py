"""bf16 for the compiled backend: the trunk under CPU autocast, the first blocks and every map in f32.

Measured on Lite0 with its ImageNet weights (docs/backends.md, ``benchmarks/precision_speed.py``): the
whole trunk under bf16 autocast, built by AOTInductor, loses top-1 on one image in 8 and moves the per-scale
maps of the early, high-resolution scales to correlation 0.85 with f32 (SMOE takes the log of activations
near zero, where bf16's 8-bit mantissa moves them most), even with the statistic computed in f32. What holds
every map at >= 0.998 is keeping the **first blocks** in f32: every module with parameters that runs before
the end of the last scale at stride <= :data:`F32_STRIDE` (Lite0: the stem and blocks 0-2; ResNet: the stem
and ``layer1``), the rest of the trunk under ``torch.autocast("cpu", torch.bfloat16)``; the explained call
is then 0.86x the f32 one.

:func:`lower` rewrites an :class:`~rtsal.engine.graph.ExplainGraph` in place before ``torch.export``: it
wraps ``forward`` of those modules (instance attributes, so module names, hooks and the recorder are
untouched); ``torch.export`` records each ``with torch.autocast`` as one region and AOTInductor compiles it.
The graph casts the scale-end tensors and the logits to f32 itself (``ExplainGraph.forward``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rtsal.engine.graph import ExplainGraph

__all__ = ["F32_STRIDE", "first_blocks", "lower"]

F32_STRIDE = 4  # scales at stride <= 4 of the input (112 and 56 pixels at 224) stay f32


def lower(graph: ExplainGraph, precision: str, example: Tensor) -> ExplainGraph:
    """``graph`` (in place) computing at ``precision``: ``f32`` leaves it as it is; ``bf16`` runs its model
    under bf16 autocast but for the first blocks (see the module docstring). ``example``: an input of the
    shape the graph is built for (two forward passes find the blocks)."""
    if precision == "f32":
        return graph
    if precision != "bf16":
        raise ValueError(f"the compiled backend computes at f32 or bf16, not {precision!r}")
    model = graph.model
    with torch.no_grad():
        model(example)
    shapes = [tuple(a.shape[-2:]) for a in graph.recorder.pop()]
    h, w = example.shape[-2:]
    fine = [i for i, (hl, wl) in enumerate(shapes) if hl * F32_STRIDE >= h and wl * F32_STRIDE >= w]
    if fine:
        layer = graph.recorder.layers[max(fine)]
        names = first_blocks(model, layer.name, layer.call, example)
        graph.recorder.pop()
        modules = dict(model.named_modules())
        for name in names:
            modules[name].forward = _at_f32(modules[name].forward)
    model.forward = _at_bf16(model.forward)
    return graph


def first_blocks(model: nn.Module, layer: str, call: int, example: Tensor) -> list[str]:
    """The names of the modules with parameters of their own that run before call ``call`` of module
    ``layer`` returns, in the order they first run (one forward pass of ``example``)."""
    order: list[str] = []
    calls = [0]
    done = [False]

    def finished(*_: object) -> None:
        calls[0] += 1
        done[0] = done[0] or calls[0] > call

    def seen(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            if not done[0] and name not in order:
                order.append(name)

        return hook

    handles = []
    try:
        for name, m in model.named_modules():
            if name == layer:
                handles.append(m.register_forward_hook(finished))
            if next(m.parameters(recurse=False), None) is not None:
                handles.append(m.register_forward_pre_hook(seen(name)))
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


def _at_bf16(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(*args, **kwargs)

    return run


def _at_f32(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", enabled=False):
            return forward(*(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a
                             for a in args), **kwargs)

    return run
