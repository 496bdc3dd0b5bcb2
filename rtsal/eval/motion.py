"""Clips with a known motion, made from one photo by a camera pan and zoom: the frames, the true optical
flow between consecutive frames, and any map of the photo carried along the same way (a map that moves
exactly with the scene). The temporal-stability measure (:mod:`rtsal.eval.temporal`) and its flow choice
are checked against these (torch-free).

Frame t shows the photo through the affine camera ``A_t`` (photo point x -> frame point ``A_t x``), so a
point p of frame t is at ``A_{t+1} A_t^-1 p`` in frame t+1: the true flow is that minus p.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["MovingCamera"]


@dataclass(frozen=True)
class MovingCamera:
    """A camera over a photo of size ``source`` = (H, W): frames of ``size`` = (h, w); each frame the view
    moves ``pan`` = (dx, dy) photo pixels and is scaled by ``zoom`` (>1: zooms in) about its centre."""

    source: tuple[int, int]
    size: tuple[int, int]
    pan: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    start_scale: float | None = None  # frame pixels per photo pixel at t = 0 (default: fit the height)

    def matrix(self, t: int) -> np.ndarray:
        """3x3 affine from photo to frame t."""
        H, W = self.source
        h, w = self.size
        s0 = self.start_scale or h / (0.6 * H)  # start on the middle 60% of the photo's height
        s = s0 * self.zoom**t
        cx, cy = W / 2 + self.pan[0] * t, H / 2 + self.pan[1] * t  # the photo point at the frame's centre
        return np.array([[s, 0, w / 2 - s * cx], [0, s, h / 2 - s * cy], [0, 0, 1]], dtype=np.float64)

    def render(self, image: np.ndarray, t: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """The photo (or any map of the same size) as frame t sees it."""
        h, w = self.size
        m = self.matrix(t)
        flags = interpolation if m[0, 0] < 1 else cv2.INTER_LINEAR
        return cv2.warpAffine(image, m[:2], (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)

    def flow(self, t: int) -> np.ndarray:
        """True flow from frame t to t+1, (h, w, 2) float32 (x, y)."""
        h, w = self.size
        a = self.matrix(t + 1) @ np.linalg.inv(self.matrix(t))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        nx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
        ny = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
        return np.stack([nx - xs, ny - ys], -1).astype(np.float32)

    def frames(self, image: np.ndarray, n: int) -> list[np.ndarray]:
        """``n`` consecutive frames of ``image``."""
        return [self.render(image, t) for t in range(n)]
