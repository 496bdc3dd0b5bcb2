"""Colour maps for saliency: OpenCV's, by name, applied to [0, 1] maps."""

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


def to_uint8(m: Any) -> np.ndarray:
    """A [0, 1] map -> uint8 (H, W): one scaling pass on a float32 map, in place on its own copy."""
    a = to_numpy_map(m)  # a new array (np.clip copies)
    a *= 255.0
    a += 0.5
    return a.astype(np.uint8)


@functools.cache
def rgb_lut(cmap: str) -> np.ndarray:
    """OpenCV's colour map ``cmap`` as a 256-entry RGB table (256, 1, 3) uint8, built once: colouring with
    it gives RGB directly (no BGR->RGB pass over every pixel)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    lut = cv2.cvtColor(cv2.applyColorMap(ramp, CMAPS[cmap]), cv2.COLOR_BGR2RGB)
    lut.flags.writeable = False
    return lut


def colorize(m: Any, cmap: str = "jet") -> np.ndarray:
    """A [0, 1] map (H, W) -> RGB uint8 (H, W, 3) through an OpenCV colour map."""
    if cmap not in CMAPS:
        raise ValueError(f"unknown colour map {cmap!r}: choose one of {', '.join(CMAPS)}")
    return cv2.applyColorMap(to_uint8(m), rgb_lut(cmap))
