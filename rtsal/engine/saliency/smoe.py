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


LOG_SQRTS = 5  # square roots taken by log2_sqrt before its series
_LOG_SQRT_SCALE = 2.0 ** (LOG_SQRTS + 1) / math.log(2.0)  # log2 x = this * atanh_sqrt(x)


def atanh_sqrt(x: Tensor) -> Tensor:
    """``log2(x) / (2**(K+1) / ln 2)`` for positive x, from square roots and arithmetic only (K = 5).

    ``y = x ** (1/32)`` by five square roots lies within ``e**(+-0.5)`` of 1 for x in [1e-7, 1e7];
    ``ln y = 2 atanh(t)``, ``t = (y-1)/(y+1)`` (|t| < 0.25), summed to t**9. Within 1e-5 of log2 (after the
    scale) for x in [1e-7, 1e7], 1e-3 up to 1e12. Runtimes run square roots and arithmetic as vectorised,
    fused kernels where their ``Log`` is a scalar loop (OpenVINO's CPU plugin: ``Log`` runs as ``ref_f32``).
    The scale is left to the caller, so it can be applied after a reduction, on the small map. Any shape.
    """
    for _ in range(LOG_SQRTS):
        x = torch.sqrt(x)
    t = (x - 1.0) / (x + 1.0)
    t2 = t * t
    return t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0)))))


def log2_sqrt(x: Tensor) -> Tensor:
    """log2 of positive values from square roots and arithmetic only (see :func:`atanh_sqrt`). Any shape."""
    return _LOG_SQRT_SCALE * atanh_sqrt(x)


def channel_mean_mm(a: Tensor) -> Tensor:
    """Mean over dim 1 as a matrix product ``(1/C, ..., 1/C) @ a``: (N, C, ...) -> (N, ...).

    The same values as ``a.mean(dim=1)``; exported graphs get a ``MatMul`` (a GEMM kernel that reads the
    channel axis at full speed in any layout) instead of a ``ReduceMean`` over a strided axis."""
    n, c = a.shape[0], a.shape[1]
    w = torch.full((1, c), 1.0 / c, dtype=a.dtype, device=a.device)
    return torch.matmul(w, a.reshape(n, c, -1)).reshape((n, *a.shape[2:]))


def channel_mean_conv(a: Tensor) -> Tensor:
    """Mean over dim 1 as a 1x1 convolution with one output channel of weights 1/C: (N, C, H, W) -> (N, H, W);
    other ranks go through :func:`channel_mean_mm`.

    The same values as ``a.mean(dim=1)``. A runtime that keeps activations in a blocked channel layout (the
    OpenVINO CPU plugin's nChw16c) runs the convolution on that layout directly, where a ``MatMul`` or a
    ``ReduceMean`` needs a ``Reorder`` to the planar layout first (docs/graph-cost.md)."""
    if a.dim() != 4:
        return channel_mean_mm(a)
    c = a.shape[1]
    w = torch.full((1, c, 1, 1), 1.0 / c, dtype=a.dtype, device=a.device)
    return torch.nn.functional.conv2d(a, w)[:, 0]


def smoe_scale_conv(a: Tensor) -> Tensor:
    """:func:`smoe_scale_sqrt` with the channel means as 1x1 convolutions (:func:`channel_mean_conv`): no
    ``Log`` over the activations and no reorder out of a blocked layout. (N, C, H, W) -> (N, H, W)."""
    a = a + EPS
    m = channel_mean_conv(a)
    return m * (torch.log2(m) - _LOG_SQRT_SCALE * channel_mean_conv(atanh_sqrt(a)))


def smoe_scale_sqrt(a: Tensor) -> Tensor:
    """:func:`smoe_scale` for runtimes without a vectorised ``Log``: :func:`atanh_sqrt` for the per-element
    logarithm, channel means as matrix products (:func:`channel_mean_mm`), every scale on the small map.

    Agrees with :func:`smoe_scale` to about 1e-5 relative. (N, C, H, W) -> (N, H, W).
    """
    a = a + EPS
    m = channel_mean_mm(a)
    return m * (torch.log2(m) - _LOG_SQRT_SCALE * channel_mean_mm(atanh_sqrt(a)))


def smoe_scale_mm(a: Tensor) -> Tensor:
    """:func:`smoe_scale` with the natural log and channel means as matrix products (:func:`channel_mean_mm`),
    the 1/ln 2 applied once on the small map. (N, C, H, W) -> (N, H, W)."""
    a = a + EPS
    m = channel_mean_mm(a)
    return m * (torch.log(m) - channel_mean_mm(torch.log(a))) * _INV_LN2


_INV_LN2 = 1.0 / math.log(2.0)


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
# The same statistic in the formulation each runtime runs fastest, for graphs built for that runtime (measured
# by benchmarks/graph_cost.py, docs/graph-cost.md); a name missing here runs as in STATISTICS.
RUNTIME_STATISTICS: dict[str, dict[str, Callable[[Tensor], Tensor]]] = {
    "torch": {},  # eager: torch.log2 is vectorised and the reductions are native
    "compiled": {"smoe": smoe_scale_fastlog},  # Inductor fuses the bit-level log2 into the channel reduction
    # Log is a scalar reference kernel there (sqrt, arithmetic fuse); 1x1 convolutions read its blocked layout
    "openvino": {"smoe": smoe_scale_conv},
    "onnxruntime": {"smoe": smoe_scale_mm},  # its Log is vectorised; MatMul beats ReduceMean over channels
}


def runtime_statistic(name: str, runtime: str) -> Callable[[Tensor], Tensor]:
    """The statistic ``name`` (a key of :data:`STATISTICS`) as a graph for ``runtime`` should compute it."""
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {name!r}: choose one of {', '.join(STATISTICS)}")
    if runtime not in RUNTIME_STATISTICS:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIME_STATISTICS)}")
    return RUNTIME_STATISTICS[runtime].get(name, STATISTICS[name])


# statistics that need a non-negative input: the engine applies ReLU to scale-end tensors that can be negative
NEEDS_RELU = {"smoe": True, "mean": True, "std": True, "max": True, "entropy": False}
