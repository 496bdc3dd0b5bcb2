"""Per-location channel statistics of an activation tensor (pure functions).

All take ``a``: (N, C, H, W) and return (N, H, W); each reduces over the channel axis (dim 1) only, so
clip activations (N, C, T, H, W) give (N, T, H, W) and token grids work as images. SMOE Scale and the
other statistics of the FastCAM paper
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


def log2_fast(x: Tensor) -> Tensor:
    """log2 of positive normal float32 values from their bits, to within 1e-7 absolute.

    ``x = m * 2**e`` with m moved into [sqrt(1/2), sqrt(2)); ``log2 m = 2/ln 2 * atanh(t)`` with
    ``t = (m-1)/(m+1)``, summed to t**7 (|t| < 0.172). Elementwise arithmetic only, so a compiler fuses it
    into the reduction that consumes it; in eager mode :func:`torch.log2` is faster. Any shape.
    """
    bits = x.view(torch.int32)
    e = ((bits >> 23) & 0xFF) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)
    big = m > _SQRT2
    m = torch.where(big, m * 0.5, m)
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    series = t * (_C1 + t2 * (_C1 / 3.0 + t2 * (_C1 / 5.0 + t2 * (_C1 / 7.0))))
    return (e + big.to(torch.int32)).to(torch.float32) + series


_SQRT2 = math.sqrt(2.0)
_C1 = 2.0 / math.log(2.0)


def smoe_scale_fastlog(a: Tensor) -> Tensor:
    """:func:`smoe_scale` with :func:`log2_fast`: one fused pass over ``a`` once compiled.

    Agrees with :func:`smoe_scale` to about 1e-6. (N, C, H, W) -> (N, H, W).
    """
    a = a + EPS
    m = a.mean(dim=1)
    return m * (torch.log2(m) - log2_fast(a).mean(dim=1))


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
