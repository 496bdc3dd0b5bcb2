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

from rtsal.methods.variants import AblationRunner, LayerVariants, score_drops

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer


def location_drops(
    variants: LayerVariants, x1: Tensor, a1: Tensor, cls: int, base: float, batch_size: int
) -> Tensor:
    """Score drop when each location's channel column is zeroed. x1 (1, 3, H, W), a1 (1, C, h, w): (h, w)."""
    h, w = a1.shape[2], a1.shape[3]

    def zero(v: Tensor, loc: Tensor) -> None:
        v[torch.arange(len(loc), device=v.device), :, loc // w, loc % w] = 0

    return score_drops(variants, x1, a1, cls, base, batch_size, h * w, zero).view(h, w)


class FastAblationCAM(AblationRunner):
    """``fastablationcam``: the class-score drop from zeroing each location of ``layer``."""

    def __init__(
        self, explainer: Explainer, method: str = "fastablationcam", *, batch_size: int = 64, **kwargs: Any
    ) -> None:
        super().__init__(explainer, method, batch_size=batch_size, **kwargs)

    @property
    def passes(self) -> str:
        if self.layer_shape is None:
            return "1 + h*w fwd after the layer"
        hw = self.layer_shape[1] * self.layer_shape[2]
        return f"1 + {-(-hw // self.batch_size)} fwd, {hw} after the layer"

    def image_map(self, x1: Tensor, a1: Tensor, cls: int, base: float) -> Tensor:
        return torch.relu(location_drops(self.variants, x1, a1, cls, base, self.batch_size))
