"""Guided Backprop (Springenberg et al. 2015) and Guided Grad-CAM (Selvaraju et al. 2017).

Guided Backprop is the gradient of the target logit with respect to the input, where every ReLU passes
back only positive gradients: ``grad_in = ReLU(grad_out) * (x > 0)``, the same rule as captum's
``GuidedBackprop`` (which hooks ``nn.ReLU`` modules; ``nn.ReLU6`` is hooked here too). Guided Grad-CAM
multiplies it by the Grad-CAM at the layer, upsampled to the input size and min-max normalised; one
forward pass serves both backward passes (the head-only one for Grad-CAM with plain gradients, then the
full one with guided ReLUs). The map is the largest absolute value over the colour channels, scaled so
its 99th percentile is 1 (gradient maps have a few very large pixels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rtsal.engine.explainer import resolve_targets
from rtsal.engine.hooks import HookOwner
from rtsal.engine.saliency.cam import gradcam
from rtsal.engine.saliency.combine import upsample
from rtsal.engine.saliency.norm import range_norm
from rtsal.methods.base import MethodOutput, MethodRunner, Target, record

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer

GUIDED_MODULES = (nn.ReLU, nn.ReLU6)


class GuidedReLUs(HookOwner):
    """Context manager: while on, each ReLU output of a forward pass with autograd gets a gradient hook
    that passes only positive gradients back, whenever :attr:`active` is true at backward time."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.active = True

    def attach(self) -> None:
        for module in self.model.modules():
            if isinstance(module, GUIDED_MODULES):
                self.hook(module, self._forward)

    def _forward(self, module: nn.Module, args: object, out: Tensor) -> None:
        if isinstance(out, Tensor) and out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad: Tensor) -> Tensor | None:
        return torch.relu(grad) if self.active else None


def guided_backprop(model: nn.Module, x: Tensor, target: Target = None) -> tuple[Tensor, Tensor, Tensor]:
    """x (N, 3, H, W) -> (logits (N, classes), target (N,), guided gradient (N, 3, H, W))."""
    x = x.detach().requires_grad_(True)
    with GuidedReLUs(model), torch.enable_grad():
        logits = model(x)
    tgt = resolve_targets(logits, target)
    (g,) = torch.autograd.grad(logits.gather(1, tgt.view(-1, 1)).sum(), x)
    return logits.detach(), tgt, g


def gradient_map(g: Tensor) -> Tensor:
    """The largest absolute gradient over the colour channels: (N, 3, H, W) -> (N, H, W)."""
    return g.abs().amax(dim=1)


def percentile_norm(maps: Tensor, q: float = 0.99) -> Tensor:
    """Non-negative (N, H, W) maps divided by their per-image ``q`` quantile, clipped to [0, 1].
    Clips (N, T, H, W): per clip."""
    flat = maps.flatten(1).float()
    scale = torch.quantile(flat, q, dim=1).clamp_min(1e-12)
    return (maps / scale.view((-1,) + (1,) * (maps.dim() - 1))).clamp(0.0, 1.0)


class GuidedBackprop(MethodRunner):
    """``guided-backprop``: the guided input gradient of the target logit."""

    def __init__(self, explainer: Explainer, method: str = "guided-backprop", **kwargs: Any) -> None:
        super().__init__(explainer, method, **kwargs)

    @property
    def passes(self) -> str:
        return "1 fwd + 1 full bwd"

    def normalise(self, maps: Tensor) -> Tensor:
        return percentile_norm(maps)

    def compute(self, x: Tensor, target: Target) -> MethodOutput:
        x = x.detach().requires_grad_(True)
        with GuidedReLUs(self.explainer.model) as guided:
            guided.active = True
            logits, ms = self.first_forward(x, grad=True)
        tgt = resolve_targets(logits, target)
        (g,) = torch.autograd.grad(logits.gather(1, tgt.view(-1, 1)).sum(), x)
        return MethodOutput(logits.detach(), tgt, gradient_map(g), forward_ms=ms)


def guided_gradcam_grad(
    model: nn.Module, x: Tensor, a: Tensor, logits: Tensor, guided: GuidedReLUs, target: Target = None
) -> tuple[Tensor, Tensor]:
    """After a forward pass with guided hooks (``a`` the layer's output, in the graph): Guided Grad-CAM.

    -> (target (N,), guided gradient x Grad-CAM (N, 3, H, W)).
    """
    tgt = resolve_targets(logits, target)
    score = logits.gather(1, tgt.view(-1, 1)).sum()
    guided.active = False
    (g_a,) = torch.autograd.grad(score, a, retain_graph=True)
    guided.active = True
    (g_x,) = torch.autograd.grad(score, x)
    with torch.no_grad():
        cam = range_norm(upsample(gradcam(a.detach(), g_a), tuple(x.shape[2:])))  # (H, W) or (T, H, W)
        return tgt, g_x * cam[:, None]


class GuidedGradCAM(GuidedBackprop):
    """``guided-gradcam``: Guided Backprop x Grad-CAM at ``layer``."""

    def __init__(self, explainer: Explainer, method: str = "guided-gradcam", **kwargs: Any) -> None:
        super().__init__(explainer, method, **kwargs)

    @property
    def passes(self) -> str:
        return "1 fwd + head bwd + full bwd"

    def compute(self, x: Tensor, target: Target) -> MethodOutput:
        model = self.explainer.model
        x = x.detach().requires_grad_(True)
        keep: list[Tensor] = []
        with GuidedReLUs(model) as guided:
            logits, ms = self.first_forward(x, record(model, self.layer, keep, clone=True), grad=True)
        a = keep[0]
        self.layer_shape = (a.shape[1], a.shape[2], a.shape[3])
        tgt, g = guided_gradcam_grad(model, x, a, logits, guided, target)
        return MethodOutput(logits.detach(), tgt, gradient_map(g), forward_ms=ms)
