"""Vision transformers: token sequences as grids, and which blocks are the scales.

A transformer's blocks output tokens, not (N, C, h, w) maps. The engine turns them into grids so that the
channel statistics, the normalisation and the CAM run on them as on a CNN's activations:

- ``vit`` (torchvision ``VisionTransformer``): a block outputs (N, 1 + h*w, C), the class token first; the
  class token is dropped and the patch tokens reshaped to (N, C, h, w) (h = w: ViT takes square inputs).
  All blocks share one resolution, so the scales are blocks at several depths (the registry picks four).
- ``swin`` (torchvision ``SwinTransformer``): a stage outputs channels-last (N, h, w, C); permuted to
  (N, C, h, w). Its four stages halve the resolution in turn: natural scales.

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

from rtsal.engine.probe import Probe, parse_layer
from rtsal.errors import UsageError
from rtsal.types import LayerInfo

__all__ = ["LAYOUTS", "probe_tokens", "to_grid"]

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
