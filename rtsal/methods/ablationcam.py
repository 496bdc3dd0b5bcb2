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

from rtsal.engine.explainer import resolve_targets
from rtsal.methods.base import MethodOutput, MethodRunner, Target, chunks, record
from rtsal.methods.variants import LayerVariants, repeat

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer


def channel_drops(
    variants: LayerVariants, x1: Tensor, a1: Tensor, cls: int, base: float, batch_size: int
) -> Tensor:
    """Score drop when each channel is zeroed. x1 (1, 3, H, W), a1 (1, C, h, w) -> (C,)."""
    c = a1.shape[1]
    out = []
    for start, stop in chunks(c, batch_size):
        b = stop - start

        def build(a: Tensor, start: int = start, b: int = b) -> Tensor:
            v = repeat(a, b)
            v[torch.arange(b, device=a.device), torch.arange(start, start + b, device=a.device)] = 0
            return v

        out.append(base - variants.scores(x1, a1, build, b, cls))
    return torch.cat(out)


class AblationCAM(MethodRunner):
    """``ablationcam``: Ablation-CAM at ``layer``."""

    def __init__(self, explainer: Explainer, method: str = "ablationcam", **kwargs: Any) -> None:
        super().__init__(explainer, method, **kwargs)
        self.variants = LayerVariants(explainer.model, self.layer)

    @property
    def passes(self) -> str:
        if self.layer_shape is None:
            return "1 + C fwd after the layer"
        c = self.layer_shape[0]
        trunk = -(-c // self.batch_size)
        return f"1 + {trunk} fwd, {c} after the layer"

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
                w = channel_drops(
                    self.variants, x[n : n + 1], a[n : n + 1], cls, float(logits[n, cls]), self.batch_size
                )
                maps.append(torch.relu(torch.einsum("c,chw->hw", w, a[n].float())))
        return MethodOutput(logits, tgt, torch.stack(maps), forward_ms=ms)
