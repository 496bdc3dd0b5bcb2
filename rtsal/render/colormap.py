"""Colour maps for saliency: OpenCV's, by name, applied to [0, 1] maps."""

from __future__ import annotations

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
    """A [0, 1] map -> uint8 (H, W)."""
    return (to_numpy_map(m) * 255.0 + 0.5).astype(np.uint8)


def colorize(m: Any, cmap: str = "jet") -> np.ndarray:
    """A [0, 1] map (H, W) -> RGB uint8 (H, W, 3) through an OpenCV colour map."""
    if cmap not in CMAPS:
        raise ValueError(f"unknown colour map {cmap!r}: choose one of {', '.join(CMAPS)}")
    bgr = cv2.applyColorMap(to_uint8(m), CMAPS[cmap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
