"""Ablation-CAM (Desai and Ramaswamy, WACV 2020): zero one channel at a time, weight it by the score drop.

``w_k = y - y_k`` with ``y`` the target logit and ``y_k`` the logit with channel k of the layer set to 0;
``CAM = ReLU(sum_k w_k A_k)``. The paper divides by ``y``, one scalar per image that the min-max
normalisation removes (when ``y > 0``; when it is negative the division would turn the map upside down,
so it is left out). Ablated copies run in batches, the trunk once per batch (:mod:`rtsal.methods.variants`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rtsal.methods.variants import AblationRunner, LayerVariants, score_drops

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer


def channel_drops(
    variants: LayerVariants, x1: Tensor, a1: Tensor, cls: int, base: float, batch_size: int
) -> Tensor:
    """Score drop when each channel is zeroed. x1 (1, 3, H, W), a1 (1, C, h, w) -> (C,)."""

    def zero(v: Tensor, idx: Tensor) -> None:
        v[torch.arange(len(idx), device=v.device), idx] = 0

    return score_drops(variants, x1, a1, cls, base, batch_size, a1.shape[1], zero)


class AblationCAM(AblationRunner):
    """``ablationcam``: Ablation-CAM at ``layer``."""

    def __init__(self, explainer: Explainer, method: str = "ablationcam", **kwargs: Any) -> None:
        super().__init__(explainer, method, **kwargs)

    @property
    def passes(self) -> str:
        if self.layer_shape is None:
            return "1 + C fwd after the layer"
        c = self.layer_shape[0]
        trunk = -(-c // self.batch_size)
        return f"1 + {trunk} fwd, {c} after the layer"

    def image_map(self, x1: Tensor, a1: Tensor, cls: int, base: float) -> Tensor:
        w = channel_drops(self.variants, x1, a1, cls, base, self.batch_size)
        return torch.relu(torch.einsum("c,chw->hw", w, a1[0].float()))
