"""Grad-CAM and Grad-CAM++ the usual way: a forward pass with autograd, then a full backward pass.

The input requires grad, so the backward pass runs through the whole network to the input, as
pytorch-grad-cam's does (it also fills every parameter's ``.grad``; this one computes only the gradients it
needs: the layer's and the input's). The CAM formulas are the engine's (:mod:`rtsal.engine.saliency.cam`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rtsal.engine.explainer import resolve_targets
from rtsal.engine.saliency.cam import CAMS
from rtsal.methods.base import MethodOutput, MethodRunner, Target, record

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer


def backward_to_input(
    logits: Tensor, a: Tensor, x: Tensor, target: Target = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward pass from the target logits through the layer output ``a`` (N, C, h, w) to the input ``x``.

    -> (target (N,), dscore/dA (N, C, h, w), dscore/dx (N, 3, H, W)). Clips: (N, C, T, h, w) and
    (N, 3, T, H, W).
    """
    tgt = resolve_targets(logits, target)
    score = logits.gather(1, tgt.view(-1, 1)).sum()
    g_a, g_x = torch.autograd.grad(score, (a, x))
    return tgt, g_a, g_x


class GradCAMFull(MethodRunner):
    """``gradcam-full`` / ``gradcampp-full``: Grad-CAM(++) at ``layer`` from a full backward pass."""

    def __init__(self, explainer: Explainer, method: str = "gradcam-full", **kwargs: Any) -> None:
        super().__init__(explainer, method, **kwargs)
        self.cam = CAMS[method.removesuffix("-full")]

    @property
    def passes(self) -> str:
        return "1 fwd + 1 full bwd"

    def compute(self, x: Tensor, target: Target) -> MethodOutput:
        keep: list[Tensor] = []
        x = x.detach().requires_grad_(True)
        logits, ms = self.first_forward(
            x, record(self.explainer.model, self.layer, keep, clone=True), grad=True
        )
        a = keep[0]
        tgt, g_a, _ = backward_to_input(logits, a, x, target)
        if self.explainer.to_grid is not None:  # transformer tokens -> (N, C, h, w) grids
            a, g_a = self.explainer.to_grid(a), self.explainer.to_grid(g_a)
        self.layer_shape = (a.shape[1], a.shape[2], a.shape[3])
        with torch.inference_mode():
            cam = self.cam(a.detach(), g_a)
        return MethodOutput(logits.detach(), tgt, cam, forward_ms=ms)
