"""Temporal stability of saliency maps: how much a map changes from one frame to the next beyond what the
motion of the scene explains (the warping error of the video-consistency literature). Torch-free: numpy
and OpenCV only, so the render thread of ``rtsal video`` can run it.

For consecutive frames t, t+1 (both as grey images at the maps' resolution):

1. dense optical flow both ways, ``F_fw`` from t to t+1 and ``F_bw`` from t+1 to t (OpenCV's DIS, fast
   preset, by default; Farneback selectable): ``benchmarks/temporal_flow.py`` measured the choice (DIS fast:
   half Farneback's endpoint error on known pans and zooms at 1/16 of its time, 0.7 ms a flow at 256x144);
2. the map of frame t carried to frame t+1 by the motion: ``W(q) = M_t(q + F_bw(q))`` (bilinear; this is
   the forward flow's inverse mapping, the way a map is warped without holes);
3. a forward-backward check marks pixels the flow cannot be trusted at (occluded or disoccluded, or
   carried in from outside the frame): kept where
   ``|F_bw(q) + F_fw(q + F_bw(q))|^2 <= 0.01 (|F_bw|^2 + |F_fw(q + F_bw(q))|^2) + 0.5`` (pixels at the
   working size; the rule of Sundaram, Brox and Keutzer 2010, as used in video style transfer);
4. the error is the mean absolute difference ``|W - M_{t+1}|`` over the pixels kept. Maps are in [0, 1], so
   the error is too: 0 for a map that moves exactly with the scene, ~1/3 for independent uniform noise.

Fewer than ``MIN_VALID`` of the pixels kept (a scene cut, a flash) gives no value for that pair (NaN).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "DEFAULT_FLOW",
    "FLOW_METHODS",
    "MIN_VALID",
    "TemporalMeter",
    "TemporalStep",
    "consistent_mask",
    "optical_flow",
    "summarise_errors",
    "to_grey",
    "warp",
    "warp_error",
    "working_size",
]

FLOW_METHODS = ("dis", "farneback")
DEFAULT_FLOW = "dis"  # DIS, fast preset: see benchmarks/temporal_flow.py and docs/review.md
MIN_VALID = 0.05  # below this fraction of trusted pixels a pair has no value
WORK_SIDE = 160  # the flow runs with the long side at most this many pixels (720p: 160x90)
FB_ALPHA, FB_BETA = 0.01, 0.5


def working_size(h: int, w: int, max_side: int = WORK_SIDE) -> tuple[int, int]:
    """(h, w) divided by the smallest whole number that brings the long side to ``max_side`` or less (a
    whole-number area resize of a frame is many times cheaper than an arbitrary one)."""
    k = math.ceil(max(h, w) / max_side)
    return max(8, round(h / k)), max(8, round(w / k))


def to_grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (H, W, 3) or grey (H, W) -> grey uint8 (h, w) at ``size`` = (h, w) (area average)."""
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image  # one channel to shrink
    if g.shape[:2] != tuple(size):
        g = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(g, dtype=np.uint8)


class _Flow:
    """One optical-flow engine (OpenCV objects are not thread-safe: one per meter)."""

    def __init__(self, method: str) -> None:
        if method not in FLOW_METHODS:
            raise ValueError(f"flow method must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST) if method == "dis" else None

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow from grey ``a`` to grey ``b``, (h, w, 2) float32 (x, y): ``a(p) ~ b(p + F(p))``."""
        if self._dis is not None:
            return self._dis.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.1, 0)


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = DEFAULT_FLOW) -> np.ndarray:
    """Dense flow from grey uint8 ``a`` to ``b``, both (h, w) -> (h, w, 2) float32: ``a(p) ~ b(p + F(p))``."""
    return _Flow(method)(a, b)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)).copy()
    ys = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w)).copy()
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _sq(v: np.ndarray) -> np.ndarray:
    """|v|^2 of a (h, w, 2) field (plain element-wise maths: a reduction over a length-2 axis is slow)."""
    x, y = v[..., 0], v[..., 1]
    return x * x + y * y


def warp(m: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``m`` (h, w[, c]) at ``q + flow(q)``: (warped (h, w[, c]), inside (h, w) bool, the sample
    point lies in the frame)."""
    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    mx, my = xs + flow[..., 0], ys + flow[..., 1]
    out = cv2.remap(m, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return out, inside


def consistent_mask(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Forward-backward check at frame t+1's pixels: (h, w) bool, True where ``bw`` (t+1 -> t) and ``fw``
    (t -> t+1) undo each other and the point stays in the frame."""
    fw_at, inside = warp(fw, bw)
    lhs = _sq(bw + fw_at)
    rhs = FB_ALPHA * (_sq(bw) + _sq(fw_at)) + FB_BETA
    return inside & (lhs <= rhs)


@dataclass(frozen=True)
class TemporalStep:
    """The warping error of one pair of frames: ``error`` (NaN when too few pixels are trusted) and
    ``valid``, the fraction of pixels kept by the forward-backward check."""

    error: float
    valid: float


def warp_error(m0: np.ndarray, m1: np.ndarray, fw: np.ndarray, bw: np.ndarray) -> TemporalStep:
    """Maps (h, w) in [0, 1] of frames t and t+1 and the flows both ways -> the masked mean absolute
    difference of ``m0`` warped to t+1 and ``m1``."""
    warped, _ = warp(np.ascontiguousarray(m0, dtype=np.float32), bw)
    mask = consistent_mask(fw, bw)
    valid = float(mask.mean())
    if valid < MIN_VALID:
        return TemporalStep(math.nan, valid)
    return TemporalStep(float(np.abs(warped - m1)[mask].mean()), valid)


class TemporalMeter:
    """Feeds frames and their maps in order; each call returns the step from the previous frame.

    ``meter(image, saliency)``: RGB uint8 frame (any size) and its map (h, w) in [0, 1] (any size) -> the
    :class:`TemporalStep` against the previous call, None for the first. Frames and maps are brought to one
    working size: the frame's divided by a whole number, long side at most ``max_side``.
    """

    def __init__(self, flow: str = DEFAULT_FLOW, max_side: int = WORK_SIDE) -> None:
        self._flow = _Flow(flow)
        self.flow = flow
        self.max_side = max_side
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._prev = None

    def __call__(self, image: np.ndarray, saliency: np.ndarray) -> TemporalStep | None:
        m = np.asarray(saliency, dtype=np.float32).reshape(saliency.shape[-2:])
        size = working_size(*image.shape[:2], self.max_side)
        if m.shape != size:
            m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)  # maps are smooth
        g = to_grey(image, size)
        prev, self._prev = self._prev, (g, m)
        if prev is None or prev[0].shape != g.shape:
            return None
        fw = self._flow(prev[0], g)
        bw = self._flow(g, prev[0])
        return warp_error(prev[1], m, fw, bw)


def summarise_errors(errors: list[float]) -> dict[str, float | int | None]:
    """Mean, median, 95th percentile and count of the finite per-pair errors (None where there are none)."""
    v = np.asarray([e for e in errors if e is not None and math.isfinite(e)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "median": None, "p95": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "n": int(v.size),
    }
