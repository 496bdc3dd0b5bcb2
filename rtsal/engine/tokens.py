"""Vision transformers: token sequences as grids, and which blocks are the scales.

A transformer's blocks output tokens, not (N, C, h, w) maps. The engine turns them into grids so that the
channel statistics, the normalisation and the CAM run on them as on a CNN's activations:

- ``vit`` (torchvision ``VisionTransformer``): a block outputs (N, 1 + h*w, C), the class token first; the
  class token is dropped and the patch tokens reshaped to (N, C, h, w) (h = w: ViT takes square inputs).
  All blocks share one resolution, so the scales are blocks at several depths (the registry picks four).
- ``swin`` (torchvision ``SwinTransformer``): a stage outputs channels-last (N, h, w, C); permuted to
  (N, C, h, w). Its four stages halve the resolution in turn: natural scales.

Any other model (timm, Hugging Face, torchvision by name) is read by the probe (rtsal/engine/probe.py),
which gives each scale a :class:`~rtsal.engine.probe.Grid`: ``nhwc`` stages are permuted, ``tokens``
(N, prefix + h*w, C) lose their ``prefix`` class/distillation/register tokens and become (N, C, h, w);
:class:`Grids` applies them to whatever tensor the engine hands it (activations and their gradients).

Token values are signed (no ReLU at a block's output), so the engine marks every token layer ``relu``:
the statistics that need non-negative input (SMOE, mean, std, max) get ReLU first, as the engine does
for a CNN's linear bottlenecks; ``entropy`` sees the signed values. benchmarks/token_stats.py is the
measurement behind keeping ReLU-then-SMOE as the default (README, "Video-clip models and transformers").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rtsal.engine.probe import Grid, Probe, parse_layer
from rtsal.errors import UsageError
from rtsal.types import LayerInfo

__all__ = ["LAYOUTS", "Grids", "grid_to_nchw", "probe_tokens", "to_grid"]

LAYOUTS = ("vit", "swin")


def to_grid(t: Tensor, layout: str) -> Tensor:
    """Token tensor -> grid (N, C, h, w).

    ``vit``: (N, 1 + h*w, C) -> (N, C, h, w), class token dropped, h = w. ``swin``: (N, h, w, C) ->
    (N, C, h, w). Works on gradients too (same layout as the activation they belong to).
    """
    if layout == "vit":
        if t.dim() != 3:
            raise UsageError(f"a ViT block output must be (N, tokens, C), got {tuple(t.shape)}")
        n, length, c = t.shape
        side = math.isqrt(length - 1)
        if side * side != length - 1:
            raise UsageError(f"{length} tokens are not a class token and a square grid")
        return t[:, 1:, :].transpose(1, 2).reshape(n, c, side, side)
    if layout == "swin":
        if t.dim() != 4:
            raise UsageError(f"a Swin stage output must be (N, h, w, C), got {tuple(t.shape)}")
        return t.permute(0, 3, 1, 2)
    raise ValueError(f"unknown token layout {layout!r}: one of {', '.join(LAYOUTS)}")


def grid_to_nchw(t: Tensor, grid: Grid) -> Tensor:
    """One layer's output -> (N, C, h, w) by its probed ``grid``: (N, C, h, w) as it is, (N, h, w, C)
    permuted, (N, prefix + h*w, C) without the prefix tokens, reshaped row by row."""
    if grid.layout == "nchw":
        return t
    if grid.layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    n, length, c = t.shape
    gh, gw = grid.hw
    if length - grid.prefix != gh * gw:
        raise UsageError(f"{length} tokens are not {grid.prefix} prefix tokens and a {gh}x{gw} grid")
    return t[:, grid.prefix:, :].transpose(1, 2).reshape(n, c, gh, gw)


class Grids:
    """Turns any scale-end output (or its gradient) of one model into an (N, C, h, w) grid.

    The engine hands tensors over without saying which layer they came from, so the layout is told by
    shape: a 3-dim tensor is the token layer with its length and width; a 4-dim tensor whose last axis is
    the channels of a channels-last layer (and whose second is not those of a channels-first one) is
    permuted; anything else is a grid already. Token models run at one input size, so lengths are fixed.
    """

    def __init__(self, grids: Sequence[Grid]) -> None:
        self._tokens = {(g.hw[0] * g.hw[1] + g.prefix, g.channels): g for g in grids if g.layout == "tokens"}
        self._nhwc = {g.channels: g for g in grids if g.layout == "nhwc"}
        self._nchw = {g.channels for g in grids if g.layout == "nchw"}

    def __call__(self, t: Tensor) -> Tensor:
        if t.dim() == 3:
            grid = self._tokens.get((int(t.shape[1]), int(t.shape[2])))
            if grid is None:
                raise UsageError(f"no token layer of this model gives a {tuple(t.shape)} output")
            return grid_to_nchw(t, grid)
        if t.dim() == 4 and int(t.shape[3]) in self._nhwc and int(t.shape[1]) not in self._nchw:
            return t.permute(0, 3, 1, 2)
        return t


@torch.no_grad()
def probe_tokens(model: nn.Module, layers: Sequence[str], layout: str, size: int = 224) -> Probe:
    """One forward pass of a random (1, 3, size, size) input: the grid of each named layer's output.

    Unlike :func:`rtsal.engine.probe.probe` the layers are not found by shape (every ViT block has the same
    one; Swin's stages are channels-last): the registry names them, or the user does with ``--layers``.
    The model's mode is restored and no hook is left behind. No transformer head is GAP + linear on the
    last grid (class token + LayerNorm, or LayerNorm before the pooling), so ``linear_head`` is None and the
    CAM takes the head gradient by autograd.
    """
    named = dict(model.named_modules())
    specs = [parse_layer(s) for s in layers]
    for name, _ in specs:
        if not name or name not in named:
            raise UsageError(f"no module named {name!r} in the model (see `rtsal layers MODEL`)")
    seen: dict[tuple[str, int], tuple[int, ...]] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, args: object, out: object) -> None:
            k = counts.get(name, 0)
            counts[name] = k + 1
            if isinstance(out, Tensor):
                seen[(name, k)] = tuple(to_grid(out, layout).shape)

        return fn

    was_training = model.training
    model.eval()
    try:
        for name in {n for n, _ in specs}:
            handles.append(named[name].register_forward_hook(hook(name)))
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        logits = model(torch.rand(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    infos = []
    for spec, key in zip(layers, specs, strict=True):
        if key not in seen:
            raise UsageError(f"layer {spec!r} gave no token output in one forward pass")
        _, c, h, _w = seen[key]
        stride = max(1, round(size / h))
        infos.append(LayerInfo(key[0], key[1], c, stride, (-(-224 // stride),) * 2, relu=True))
    return Probe(tuple(infos), int(logits.shape[1]), None)
