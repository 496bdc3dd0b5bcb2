"""Per-location channel statistics of an activation tensor (pure functions).

All take ``a``: (N, C, H, W) and return (N, H, W). SMOE Scale and the other statistics of the FastCAM paper
(arXiv 1911.11293, LLNL/fastcam) are computed over the channel axis at each location.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

EPS = 1e-7  # FastCAM's offset that keeps log2 finite; exactly this value, in float32


def smoe_scale(a: Tensor) -> Tensor:
    """SMOE Scale: ``m * (log2 m - mean_c log2 a)`` with ``a + 1e-7`` and ``m = mean_c a``.

    ``a`` must be non-negative (after a ReLU). (N, C, H, W) -> (N, H, W).
    """
    a = a + EPS
    m = a.mean(dim=1)
    return m * (torch.log2(m) - torch.log2(a).mean(dim=1))


def smoe_scale_fast(a: Tensor, group: int = 64) -> Tensor:
    """SMOE Scale with one ``frexp`` pass instead of a ``log2`` per value; same result as :func:`smoe_scale`.

    ``log2 x = e + log2 f`` with ``x = f * 2**e`` and ``f`` in [0.5, 1). The sum of the exponents is exact,
    and the mantissas are multiplied in groups of ``group`` channels (product >= 2**-64, no underflow in
    float32) so that only ``C / group`` logarithms are taken per location. (N, C, H, W) -> (N, H, W).
    """
    n, c, h, w = a.shape
    a = a + EPS
    m = a.mean(dim=1)
    mant, expo = torch.frexp(a)
    pad = (-c) % group
    if pad:
        mant = torch.cat([mant, mant.new_ones(n, pad, h, w)], dim=1)
    prod = mant.view(n, -1, group, h, w).prod(dim=2)
    log_sum = torch.log2(prod).sum(dim=1) + expo.sum(dim=1, dtype=torch.float32)
    return m * (torch.log2(m) - log_sum / c)


def channel_mean(a: Tensor) -> Tensor:
    """Mean over channels. (N, C, H, W) -> (N, H, W)."""
    return a.mean(dim=1)


def channel_std(a: Tensor) -> Tensor:
    """Unbiased standard deviation over channels. (N, C, H, W) -> (N, H, W)."""
    return a.std(dim=1)


def channel_max(a: Tensor) -> Tensor:
    """Maximum over channels. (N, C, H, W) -> (N, H, W)."""
    return a.amax(dim=1)


def truncnorm_entropy(a: Tensor) -> Tensor:
    """Entropy of a normal truncated below at 0, fitted to the channel column at each location.

    Meant for the pre-ReLU tensor. With ``alpha = -mean / std`` and ``Z = 1 - Phi(alpha)``:
    ``log(sqrt(2 pi e) * std * Z) + alpha * phi(alpha) / (2 Z)``. (N, C, H, W) -> (N, H, W).
    """
    mean = a.mean(dim=1)
    std = a.std(dim=1).clamp_min(1e-12)
    alpha = -mean / std
    pdf = torch.exp(-0.5 * alpha * alpha) / math.sqrt(2.0 * math.pi)
    z = 1.0 - (0.5 * (1.0 + torch.erf(alpha / math.sqrt(2.0))) + EPS)
    z = z.clamp_min(EPS)
    return torch.log(math.sqrt(2.0 * math.pi * math.e) * std * z) + alpha * pdf / (2.0 * z)


STATISTICS: dict[str, Callable[[Tensor], Tensor]] = {
    "smoe": smoe_scale,
    "mean": channel_mean,
    "std": channel_std,
    "max": channel_max,
    "entropy": truncnorm_entropy,
}
# statistics that need a non-negative input: the engine applies ReLU to scale-end tensors that can be negative
NEEDS_RELU = {"smoe": True, "mean": True, "std": True, "max": True, "entropy": False}
