"""LOVI: layer-ordered visualisation of a per-scale stack as one colour image (pure function)."""

from __future__ import annotations

import torch
from torch import Tensor


def lovi(stack: Tensor) -> Tensor:
    """Colour each pixel by which layers respond there.

    ``stack`` (L, H, W) or (N, L, H, W) of per-scale maps, min-max normalised over each image's whole stack.
    Hue ``300 deg * sum P_l pos_l / sum P_l`` with ``pos_l = 1 - l / (L - 1)`` (early layers violet/blue, late
    red/yellow); saturation ``1 - (mean_l P / max_l P - 1/L) / (1 - 1/L)`` (all layers alike: white);
    value ``max_l P``. Returns BGR float in [0, 1], (H, W, 3) or (N, H, W, 3). All-zero pixels are black.
    """
    single = stack.dim() == 3
    p = stack.unsqueeze(0) if single else stack
    n, n_layers = p.shape[:2]
    flat = p.flatten(1)
    lo = flat.amin(dim=1).view(n, 1, 1, 1)
    hi = flat.amax(dim=1).view(n, 1, 1, 1)
    p = (p - lo) / (hi - lo).clamp_min(1e-12)
    pos = 1.0 - torch.arange(n_layers, dtype=p.dtype, device=p.device) / max(n_layers - 1, 1)
    total = p.sum(dim=1)
    peak = p.amax(dim=1)
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    hue = 300.0 * torch.einsum("nlhw,l->nhw", p, pos) / safe_total
    if n_layers > 1:
        ratio = torch.where(
            peak > 0, (total / n_layers) / torch.where(peak > 0, peak, torch.ones_like(peak)), 1.0
        )
        sat = 1.0 - (ratio - 1.0 / n_layers) / (1.0 - 1.0 / n_layers)
    else:
        sat = torch.zeros_like(peak)
    bgr = hsv_to_bgr(hue, sat.clamp(0, 1), peak.clamp(0, 1))
    return bgr[0] if single else bgr


def hsv_to_bgr(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV (hue in degrees, s and v in [0, 1]) to BGR in [0, 1]. (...), (...), (...) -> (..., 3)."""

    def channel(k_offset: float) -> Tensor:
        k = (k_offset + h / 60.0) % 6.0
        return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)

    r, g, b = channel(5.0), channel(3.0), channel(1.0)
    return torch.stack([b, g, r], dim=-1)
