"""Colour maps for saliency: OpenCV's, by name, applied to [0, 1] maps.

A map is drawn at the frame's size from the engine's small map (model resolution) in uint8: quantised once
at its own size, resized in uint8 (OpenCV's fixed-point SIMD path), then coloured through a 256-entry
table. Resizing the float map to the frame first and quantising that costs about twice as much at 720p and
draws the same picture within 3 levels of 255 (bilinear of quantised values against quantised bilinear).
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np

CMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "plasma": cv2.COLORMAP_PLASMA,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
}


def to_numpy_map(m: Any) -> np.ndarray:
    """A (H, W) map on any device -> float32 numpy in [0, 1] (one host copy)."""
    if hasattr(m, "detach"):  # a torch tensor, on any device
        m = m.detach().float().cpu().numpy()
    return np.clip(np.asarray(m, dtype=np.float32), 0.0, 1.0)


def fit(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``image`` (h, w) or (h, w, C) resized to ``size`` = (H, W) (itself when already that size or None):
    bilinear with pixel centres aligned (as the engine's ``align_corners=False`` upsampling) when enlarging,
    area averages when shrinking."""
    if size is None or tuple(image.shape[:2]) == tuple(size):
        return image
    H, W = size
    shrink = H * W < image.shape[0] * image.shape[1]
    return cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_uint8(m: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """A [0, 1] map (h, w) -> uint8 (h, w), or (H, W) = ``size``: quantised at its own size (one scaling
    pass on its own float32 copy), then resized in uint8 (:func:`fit`)."""
    a = to_numpy_map(m)  # a new array (np.clip copies)
    a *= 255.0
    a += 0.5
    return fit(a.astype(np.uint8), size)


@functools.cache
def rgb_lut(cmap: str) -> np.ndarray:
    """OpenCV's colour map ``cmap`` as a 256-entry RGB table (256, 1, 3) uint8, built once: colouring with
    it gives RGB directly (no BGR->RGB pass over every pixel)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    lut = cv2.cvtColor(cv2.applyColorMap(ramp, CMAPS[cmap]), cv2.COLOR_BGR2RGB)
    lut.flags.writeable = False
    return lut


def colorize(m: Any, cmap: str = "jet", size: tuple[int, int] | None = None) -> np.ndarray:
    """A [0, 1] map (h, w) -> RGB uint8 (h, w, 3), or (H, W, 3) = ``size``, through an OpenCV colour map
    (the map resized in uint8 before colouring, see :func:`to_uint8`)."""
    if cmap not in CMAPS:
        raise ValueError(f"unknown colour map {cmap!r}: choose one of {', '.join(CMAPS)}")
    return cv2.applyColorMap(to_uint8(m, size), rgb_lut(cmap))
