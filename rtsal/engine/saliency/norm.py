"""Normalise saliency maps to [0, 1], per image (pure functions, (N, H, W) -> (N, H, W)).

Clip maps (N, T, H, W) are normalised per clip: the statistics run over all of a clip's time steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def gauss_norm(x: Tensor) -> Tensor:
    """Normal CDF of the map's z-scores: ``0.5 * (1 + erf((x - mu) / (sigma * sqrt 2)))``.

    mu and sigma (unbiased) are taken over each map. A constant map gives 0.5 everywhere.
    """
    flat = x.flatten(1)
    if flat.shape[1] > 1:
        sigma, mu = torch.std_mean(flat, dim=1, keepdim=True)
        sigma = torch.where(sigma > 0, sigma, 1.0)  # constant map: (x - mu) = 0 -> 0.5
    else:
        sigma, mu = torch.ones_like(flat), flat
    z = (flat - mu) * (1.0 / math.sqrt(2.0)) / sigma
    return (0.5 * (1.0 + torch.erf(z))).view_as(x)


def gamma_norm(x: Tensor, newton_steps: int = 10) -> Tensor:
    """Gamma CDF of the map, with shape k and scale theta fitted by maximum likelihood per image.

    The map is shifted so its minimum is 1e-7. k starts from the closed-form estimate of Choi and Wette (1969)
    and takes Newton steps; the CDF is the true regularised lower incomplete gamma function
    (``torch.special.gammainc``), not the 8-term series of the reference code, which falls back towards 0
    for values above about 4 theta. A constant map gives 0.5 everywhere.
    """
    n = x.shape[0]
    flat = x.flatten(1).double()
    flat = flat - flat.amin(dim=1, keepdim=True) + 1e-7
    mean = flat.mean(dim=1)
    s = torch.log(mean) - torch.log(flat).mean(dim=1)
    const = s <= 1e-12
    s = torch.where(const, torch.ones_like(s), s)
    k = (3.0 - s + torch.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
    for _ in range(newton_steps):
        f = torch.log(k) - torch.digamma(k) - s
        df = 1.0 / k - torch.polygamma(1, k)
        k = (k - f / df).clamp_min(1e-6)
    theta = mean / k
    out = torch.special.gammainc(k.view(n, 1), flat / theta.view(n, 1))
    out = torch.where(const.view(n, 1), torch.full_like(out, 0.5), out)
    return out.view_as(x).to(x.dtype)


RANGE_EPS = 1e-9  # the smallest range range_norm divides by (a constant map gives 0)


def range_norm(x: Tensor, eps: float = RANGE_EPS) -> Tensor:
    """``(x - min) / max(max - min, eps)`` per image."""
    flat = x.flatten(1)
    shape = (-1,) + (1,) * (x.dim() - 1)  # per image (N, H, W) or per clip (N, T, H, W)
    lo = flat.amin(dim=1).view(shape)
    hi = flat.amax(dim=1).view(shape)
    return (x - lo) / (hi - lo).clamp_min(eps)


NORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "gauss": gauss_norm,
    "gamma": gamma_norm,
    "range": range_norm,
}
