"""The saliency step of FastCAM as one pure function of the recorded activations (compilable as a whole)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from rtsal.engine.saliency.combine import Resize, combine_maps, upsample
from rtsal.engine.saliency.norm import range_norm


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


def fastcam_maps(
    acts: Sequence[Tensor],
    relu: Sequence[bool],
    cam_small: Tensor,
    out_size: tuple[int, ...],
    weights: Tensor,
    statistic: Callable[[Tensor], Tensor],
    norm: Callable[[Tensor], Tensor],
    resize: Resize = upsample,
) -> FastCamMaps:
    """Scale-end activations -> per-scale maps, their combination, the CAM, FastCAM and the non-class map.

    ``acts``: L tensors (N, C_l, h_l, w_l); ``relu[l]``: apply ReLU first (the tensor can be negative);
    ``cam_small``: (N, h, w) raw CAM at the last scale; ``weights``: (L,) summing to 1;
    ``statistic``: (N, C, h, w) -> (N, h, w); ``norm``: (N, h, w) -> (N, h, w) in [0, 1]; ``resize``: the
    upsampling (OpenCV on the CPU by default; ``combine.resize_bilinear`` where the step is traced).
    Clips: activations (N, C_l, t_l, h_l, w_l), ``cam_small`` (N, t, h, w), ``out_size`` (T, H, W); every
    map gains the time axis ((N, L, T, H, W), (N, T, H, W)) and is normalised per clip.
    """
    return fuse_maps(scale_maps(acts, relu, statistic, norm), cam_small, out_size, weights, resize)


def fuse_maps(
    maps: Sequence[Tensor],
    cam_small: Tensor,
    out_size: tuple[int, int],
    weights: Tensor,
    resize: Resize = upsample,
) -> FastCamMaps:
    """Normalised per-scale maps (L of (N, h_l, w_l)) and the raw CAM (N, h, w) -> every map at ``out_size``:
    the weighted combination, the range-normalised CAM, FastCAM and the non-class map."""
    smoe, scales = combine_maps(maps, out_size, weights, resize)
    cam = range_norm(resize(cam_small, out_size))
    fused = smoe * cam
    return FastCamMaps(scales, smoe, cam, fused, smoe - fused)

