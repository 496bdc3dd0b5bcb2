"""FastAblationCAM: zero the whole channel column at one location of the layer at a time.

For each location (i, j) of the layer's (C, h, w) output, every channel there is set to 0 and the drop of
the target logit is measured; the map is ``ReLU(drop)`` (h, w), upsampled and min-max normalised. h * w
variants per image (49 at 224 for a stride-32 layer), all in batches after the layer
(:mod:`rtsal.methods.variants`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rtsal.engine.explainer import resolve_targets
from rtsal.methods.base import MethodOutput, MethodRunner, Target, chunks, record
from rtsal.methods.variants import LayerVariants, repeat

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer


def location_drops(
    variants: LayerVariants, x1: Tensor, a1: Tensor, cls: int, base: float, batch_size: int
) -> Tensor:
    """Score drop when each location's channel column is zeroed. x1 (1, 3, H, W), a1 (1, C, h, w): (h, w)."""
    h, w = a1.shape[2], a1.shape[3]
    out = []
    for start, stop in chunks(h * w, batch_size):
        b = stop - start
        loc = torch.arange(start, stop, device=a1.device)

        def build(a: Tensor, b: int = b, loc: Tensor = loc) -> Tensor:
            v = repeat(a, b)
            v[torch.arange(b, device=a.device), :, loc // w, loc % w] = 0
            return v

        out.append(base - variants.scores(x1, a1, build, b, cls))
    return torch.cat(out).view(h, w)


class FastAblationCAM(MethodRunner):
    """``fastablationcam``: the class-score drop from zeroing each location of ``layer``."""

    def __init__(
        self, explainer: Explainer, method: str = "fastablationcam", *, batch_size: int = 64, **kwargs: Any
    ) -> None:
        super().__init__(explainer, method, batch_size=batch_size, **kwargs)
        self.variants = LayerVariants(explainer.model, self.layer)

    @property
    def passes(self) -> str:
        if self.layer_shape is None:
            return "1 + h*w fwd after the layer"
        hw = self.layer_shape[1] * self.layer_shape[2]
        return f"1 + {-(-hw // self.batch_size)} fwd, {hw} after the layer"

    def compute(self, x: Tensor, target: Target) -> MethodOutput:
        keep: list[Tensor] = []
        logits, ms = self.first_forward(x, record(self.explainer.model, self.layer, keep))
        a = keep[0]
        self.layer_shape = (a.shape[1], a.shape[2], a.shape[3])
        tgt = resolve_targets(logits, target)
        maps = []
        with torch.inference_mode():
            for n in range(x.shape[0]):
                cls = int(tgt[n])
                drops = location_drops(
                    self.variants, x[n : n + 1], a[n : n + 1], cls, float(logits[n, cls]), self.batch_size
                )
                maps.append(torch.relu(drops))
        return MethodOutput(logits, tgt, torch.stack(maps), forward_ms=ms)
