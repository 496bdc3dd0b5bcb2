"""Class activation maps from the head: Grad-CAM and Grad-CAM++ (pure functions).

``a`` is the activation at the last scale-end layer, (N, C, h, w); ``g`` the gradient of the target score
with respect to it, same shape. When the head is global-average-pool -> linear, ``g`` is constant over space,
``g[n, k] = W[target[n], k] / (h * w)``, and the ``*_linear`` forms need no autograd at all.

Clip models give (N, C, T, h, w): every function treats all axes after the channel axis as the space it
averages or sums over, so the same formulas give (N, T, h, w) maps (``ij`` below stands for ``tij``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def gradcam(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM: ``ReLU(sum_k mean_ij(g_k) * a_k)``. (N, C, h, w), (N, C, h, w) -> (N, h, w)."""
    w = g.flatten(2).mean(dim=2)
    return torch.relu(torch.einsum("nc,nc...->n...", w, a))


def gradcampp(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM++ with the exp(score) factor left out (one positive scalar per image).

    ``alpha = g^2 / (2 g^2 + sum_ij(a) * g^3)`` (0 where the denominator is 0),
    ``w_k = sum_ij alpha * ReLU(g)``, ``ReLU(sum_k w_k a_k)``. (N, C, h, w), (N, C, h, w) -> (N, h, w).
    """
    g2 = g * g
    denom = 2.0 * g2 + a.sum(dim=_space(a), keepdim=True) * g2 * g
    alpha = torch.where(
        denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g)
    )
    w = (alpha * torch.relu(g)).sum(dim=_space(a))
    return torch.relu(torch.einsum("nc,nc...->n...", w, a))


def _space(a: Tensor) -> tuple[int, ...]:
    """The axes after batch and channel: (2, 3) for images, (2, 3, 4) for clips."""
    return tuple(range(2, a.dim()))


def linear_head_grad(weight: Tensor, target: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """The per-channel gradient of a GAP -> linear head: ``W[target] / (h * w)`` (``t * h * w`` for clips).
    -> (N, C)."""
    return weight[target] / float(math.prod(spatial))


def gradcam_linear(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM for a spatially constant gradient ``g`` (N, C). (N, C, h, w) -> (N, h, w)."""
    return torch.relu(torch.einsum("nc,nc...->n...", g, a))


def gradcampp_linear(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM++ for a spatially constant gradient ``g`` (N, C): ``alpha_k = 1 / (2 + g_k sum_ij a_k)``.

    ``w_k = h * w * alpha_k * ReLU(g_k)``. (N, C, h, w) -> (N, h, w).
    """
    hw = math.prod(a.shape[2:])
    denom = 2.0 + g * a.sum(dim=_space(a))
    ok = (denom != 0) & (g != 0)
    alpha = torch.where(ok, 1.0 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g))
    w = hw * alpha * torch.relu(g)
    return torch.relu(torch.einsum("nc,nc...->n...", w, a))


CAMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"gradcam": gradcam, "gradcampp": gradcampp}
CAMS_LINEAR: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": gradcam_linear,
    "gradcampp": gradcampp_linear,
}


def cam_from_linear_head(a: Tensor, weight: Tensor, target: Tensor, cam: str = "gradcampp") -> Tensor:
    """Grad-CAM or Grad-CAM++ of a global-average-pool -> linear head, no autograd.

    ``a`` (N, C, h, w) the tensor the head pools, ``weight`` (classes, C), ``target`` (N,). -> (N, h, w).
    """
    g = linear_head_grad(weight, target, tuple(a.shape[2:]))
    return CAMS_LINEAR[cam](a, g)
