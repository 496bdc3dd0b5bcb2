"""The saliency step of FastCAM as one pure function of the recorded activations (compilable as a whole)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

from rtsal.engine.saliency.combine import Resize, combine_maps, resize_into, upsample
from rtsal.engine.saliency.norm import RANGE_EPS, range_norm


class FastCamMaps(NamedTuple):
    """All maps at the output size (H, W), each in [0, 1]."""

    scales: Tensor  # (N, L, H, W) normalised per-scale maps
    smoe: Tensor  # (N, H, W) their weighted mean
    cam: Tensor  # (N, H, W) range-normalised CAM
    fused: Tensor  # (N, H, W) smoe * cam
    nonclass: Tensor  # (N, H, W) smoe * (1 - cam)


def scale_maps(
    acts: Sequence[Tensor],
    relu: Sequence[bool],
    statistic: Callable[[Tensor], Tensor],
    norm: Callable[[Tensor], Tensor],
) -> list[Tensor]:
    """Each scale-end activation (N, C_l, h_l, w_l) -> its normalised statistic map (N, h_l, w_l)."""
    return [norm(statistic(torch.relu(a) if r else a)) for a, r in zip(acts, relu, strict=True)]


def fuse_maps(
    maps: Sequence[Tensor],
    cam_small: Tensor,
    out_size: tuple[int, int],
    weights: Tensor,
    resize: Resize = upsample,
) -> FastCamMaps:
    """Normalised per-scale maps (L of (N, h_l, w_l)) and the raw CAM (N, h, w) -> every map at ``out_size``:
    the weighted combination, the range-normalised CAM, FastCAM and the non-class map."""
    tensors = (*maps, cam_small, weights)
    if resize is upsample and len(out_size) == 2 and all(t.device.type == "cpu" for t in tensors):
        return fuse_on_host(maps, cam_small, (int(out_size[0]), int(out_size[1])), weights)
    smoe, scales = combine_maps(maps, out_size, weights, resize)
    cam = range_norm(resize(cam_small, out_size))
    fused = smoe * cam
    return FastCamMaps(scales, smoe, cam, fused, smoe - fused)



def fuse_on_host(
    maps: Sequence[Tensor], cam_small: Tensor, out_size: tuple[int, int], weights: Tensor
) -> FastCamMaps:
    """:func:`fuse_maps` on the CPU with OpenCV and numpy on the calling thread: each map resized straight
    into its slot of the output, the weighted sum accumulated in place (``cv2.scaleAdd``), the CAM
    range-normalised in place. Measured: torch's element-wise ops on these 50 k-value maps spend more in
    OpenMP fork and join than in the work, and the stack-then-sum made (N, L, H, W) temporaries."""
    n, n_maps = int(cam_small.shape[0]), len(maps)
    h, w = out_size
    scales = np.empty((n, n_maps, h, w), np.float32)
    smoe = np.zeros((n, h, w), np.float32)
    cam = np.empty((n, h, w), np.float32)
    wts = [float(v) for v in weights.detach().to(torch.float32).tolist()]
    small = [m.detach().to(torch.float32).contiguous().numpy() for m in maps]
    cams = cam_small.detach().to(torch.float32).contiguous().numpy()
    for j in range(n):
        for i, m in enumerate(small):
            resize_into(m[j], scales[j, i])
            cv2.scaleAdd(scales[j, i], wts[i], smoe[j], dst=smoe[j])
        c = cam[j]
        resize_into(cams[j], c)
        lo, hi = (np.float32(v) for v in cv2.minMaxLoc(c)[:2])
        np.subtract(c, lo, out=c)
        np.divide(c, max(hi - lo, np.float32(RANGE_EPS)), out=c)
    fused = smoe * cam
    nonclass = smoe - fused
    return FastCamMaps(*(torch.from_numpy(a) for a in (scales, smoe, cam, fused, nonclass)))
