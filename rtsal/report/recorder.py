"""What a review page needs, gathered frame by frame in the render stage of ``rtsal video``.

Frames travel to the page as one small H.264 video (measured against per-frame JPEG images in
``benchmarks/report.py``: the video is ~10x smaller at the same picture size, see docs/review.md). Each
video frame is an *atlas*: the overlay picture, downscaled to ``REVIEW_SIDE`` pixels on its long side, on
top, and under it a grid of grey tiles, the drawn map and each per-scale map of that frame (value v ->
grey level 255 v), which the page colours with the run's colour map. One seek shows the overlay and
its maps together, always in step. Keyframes every ``GOP`` frames and no B-frames keep a seek short.

Besides the video: per frame the top classes, the temporal-stability step (:mod:`rtsal.eval.temporal`),
and thumbnails (small JPEGs) of the frames that become *events*: top-1 changes, starts of low-confidence
runs, and the least stable frames (the largest warping errors, kept in a bounded heap while the video
runs, then only those above a robust threshold: median + 3 MAD of all steps).
"""

from __future__ import annotations

import base64
import heapq
import math
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from rtsal.eval.temporal import TemporalStep

__all__ = ["GOP", "LOW_CONFIDENCE", "REVIEW_CRF", "REVIEW_SIDE", "ReviewRecorder", "atlas_layout"]

REVIEW_SIDE = 640  # at most this long side of the overlay in the page's video (see benchmarks/report.py)
REVIEW_CRF = 32  # x264 quality of that video (see benchmarks/report.py)
# ... capped: at most ~500 kb/s whatever the content (VBV), so 10 minutes of video stay ~40 MB (~55 MB as
# base64): the page's size budget, 80 MB for 10 minutes, holds for any footage (docs/review.md)
REVIEW_MAXRATE, REVIEW_BUFSIZE = "500k", "1000k"
GOP = 25  # frames between keyframes: a seek decodes at most this many (~1 s at 25 fps)
TILE_COLUMNS = 3
THUMB_WIDTH = 160
MAX_EVENTS = 200  # per kind, with thumbnails; more are counted
UNSTABLE_KEPT = 40  # the least stable frames kept as candidates (each with its thumbnail)
LOW_CONFIDENCE = 0.3  # top-1 probability under this starts a low-confidence event


@dataclass(frozen=True)
class AtlasLayout:
    """Where the overlay and the map tiles sit in a review video frame (pixels, all even)."""

    width: int
    height: int  # of the overlay
    tile_w: int
    tile_h: int
    tiles: int
    columns: int

    @property
    def atlas_size(self) -> tuple[int, int]:
        rows = math.ceil(self.tiles / self.columns)
        return self.height + rows * self.tile_h, self.width

    def tile_origin(self, k: int) -> tuple[int, int]:
        """(x, y) of tile ``k``."""
        return (k % self.columns) * self.tile_w, self.height + (k // self.columns) * self.tile_h

    def to_json(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "tiles": [[*self.tile_origin(k), self.tile_w, self.tile_h] for k in range(self.tiles)],
        }


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def atlas_layout(frame_h: int, frame_w: int, tiles: int, side: int = REVIEW_SIDE) -> AtlasLayout:
    """The atlas for frames of (frame_h, frame_w) and ``tiles`` maps: the frame divided by the smallest
    whole number that brings its long side to ``side`` or less (a whole-number area resize is ~40x faster
    than an arbitrary one: 0.2 ms against 8 ms for 1280x720 here)."""
    s = 1.0 / math.ceil(max(frame_h, frame_w) / side)
    w, h = _even(frame_w * s), _even(frame_h * s)
    cols = max(1, min(TILE_COLUMNS, tiles))
    tw = (w // cols) // 2 * 2
    th = _even(tw * frame_h / frame_w)
    return AtlasLayout(w, h, tw, th, tiles, cols)


class _AtlasEncoder:
    """H.264 in MP4, full-range BT.601 4:2:0 straight from OpenCV's RGB -> I420 conversion (a grey level v
    is luma v exactly; ~20x cheaper than a colour-managed swscale pass), keyframes every ``GOP`` frames, no
    B-frames, x264 ``superfast`` (a third less CPU than
    ``veryfast`` for ~15% more bytes), one thread (the render thread's)."""

    def __init__(self, path: Path, size: tuple[int, int], time_base: Any = None) -> None:
        from fractions import Fraction

        import av

        self.path = path
        self.tb = Fraction(time_base) if time_base else Fraction(1, 90000)
        self._c = av.open(str(path), "w")
        s = self._c.add_stream(
            "libx264",
            rate=25,
            options={
                "crf": str(REVIEW_CRF),
                "maxrate": REVIEW_MAXRATE,
                "bufsize": REVIEW_BUFSIZE,
                "preset": "superfast",
                "g": str(GOP),
                "bf": "0",
                "x264-params": "scenecut=0",
            },
        )
        s.height, s.width = size
        s.pix_fmt = "yuvj420p"
        s.codec_context.time_base = s.time_base = self.tb
        s.codec_context.thread_count = 1
        s.codec_context.color_range = 2  # full (JPEG) range
        self._s = s
        self._last = -1

    def write(self, rgb: np.ndarray, t: float) -> None:
        import av

        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        pts = max(self._last + 1, round(t / self.tb))
        self._last = frame.pts = pts
        frame.time_base = self.tb
        for p in self._s.encode(frame):
            self._c.mux(p)

    def close(self, complete: bool = True) -> None:
        """Flush the encoder (when ``complete``) and close the file."""
        if self._c is None:
            return
        try:
            if complete:
                for p in self._s.encode(None):
                    self._c.mux(p)
        finally:
            self._c.close()
            self._c = None


def _jpeg_uri(rgb: np.ndarray, width: int = THUMB_WIDTH, quality: int = 70) -> str:
    h = max(2, round(rgb.shape[0] * width / rgb.shape[1]))
    small = cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover - OpenCV always encodes a plain RGB image
        raise RuntimeError("cannot encode a thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class ReviewRecorder:
    """Collects the page's frames and data; :meth:`finish_video` and :meth:`page_events` at the end.

    ``add(frame, top, maps, picture, step)`` per frame, in order: ``top`` is [(class index, label,
    probability), ...] best first, ``maps`` the drawn map (h, w) followed by the per-scale maps, each in
    [0, 1] at model resolution, ``picture`` the overlay as written (RGB uint8), ``step`` the temporal step
    from the previous frame. Owns a temporary folder (:meth:`close` removes it).
    """

    def __init__(self, *, time_base: Any = None, side: int = REVIEW_SIDE) -> None:
        self.side = side
        self._time_base = time_base
        self._dir = Path(tempfile.mkdtemp(prefix="rtsal-review-"))
        self._writer: Any = None
        self.layout: AtlasLayout | None = None
        self.frames: list[dict[str, Any]] = []
        self.labels: dict[int, str] = {}
        self.events: dict[str, list[dict[str, Any]]] = {"top1": [], "low": [], "unstable": []}
        self.event_counts: Counter[str] = Counter()
        self._unstable: list[tuple[float, int, str]] = []  # min-heap of (error, frame, thumbnail)
        self.engines: Counter[str] = Counter()
        self.timings: dict[str, list[float]] = {}
        self.own_s = 0.0  # CPU seconds of the render thread spent here (the report's cost)
        self._first_pts: float | None = None
        self._low = False

    # -- per frame ----------------------------------------------------------------------------------------
    def add(
        self,
        index: int,
        pts: float | None,
        top: list[tuple[int, str, float]],
        maps: list[np.ndarray],
        picture: np.ndarray,
        step: TemporalStep | None,
        *,
        engine: str = "",
        timings: dict[str, float] | None = None,
    ) -> None:
        t0 = time.thread_time()
        n = len(self.frames)
        if self._first_pts is None:
            self._first_pts = pts or 0.0
        t = (pts - self._first_pts) if pts is not None else (self.frames[-1]["t"] + 1 / 25 if n else 0.0)
        self._write_atlas(picture, maps, t)
        for cid, label, _ in top:
            self.labels.setdefault(int(cid), str(label))
        err = None if step is None or not math.isfinite(step.error) else round(step.error, 5)
        rec = {
            "i": index,
            "t": round(t, 6),
            "top": [[int(c), round(float(p), 4)] for c, _, p in top],
            "err": err,
            "valid": None if step is None else round(step.valid, 3),
        }
        self.frames.append(rec)
        self.engines[engine] += 1
        for k, v in (timings or {}).items():
            self.timings.setdefault(k, []).append(float(v))
        self._events(n, rec, picture)
        self.own_s += time.thread_time() - t0

    def _write_atlas(self, picture: np.ndarray, maps: list[np.ndarray], t: float) -> None:
        if self._writer is None:
            self.layout = atlas_layout(picture.shape[0], picture.shape[1], len(maps), self.side)
            self._writer = _AtlasEncoder(self._dir / "review.mp4", self.layout.atlas_size, self._time_base)
        lay = self.layout
        assert lay is not None
        H, W = lay.atlas_size
        atlas = np.zeros((H, W, 3), np.uint8)
        if picture.shape[:2] == (lay.height, lay.width):
            atlas[: lay.height, : lay.width] = picture
        else:
            atlas[: lay.height, : lay.width] = cv2.resize(
                picture, (lay.width, lay.height), interpolation=cv2.INTER_AREA
            )
        for k, m in enumerate(maps[: lay.tiles]):
            x, y = lay.tile_origin(k)
            # bilinear then a saturating scale to uint8: ~10x cheaper than an area resize of a map
            small = cv2.resize(
                np.asarray(m, dtype=np.float32).reshape(m.shape[-2:]),
                (lay.tile_w, lay.tile_h),
                interpolation=cv2.INTER_LINEAR,
            )
            atlas[y : y + lay.tile_h, x : x + lay.tile_w] = cv2.convertScaleAbs(small, alpha=255.0)[..., None]
        self._writer.write(atlas, t)

    def _event(self, kind: str, n: int, picture: np.ndarray, text: str) -> None:
        self.event_counts[kind] += 1
        if len(self.events[kind]) < MAX_EVENTS:
            self.events[kind].append({"f": n, "text": text, "thumb": _jpeg_uri(picture)})

    def _events(self, n: int, rec: dict[str, Any], picture: np.ndarray) -> None:
        top1, p1 = rec["top"][0] if rec["top"] else (-1, 1.0)
        if n > 0 and self.frames[n - 1]["top"]:
            before = self.frames[n - 1]["top"][0][0]
            if before != top1:
                self._event(
                    "top1",
                    n,
                    picture,
                    f"{self.labels.get(before, before)} \u2192 {self.labels.get(top1, top1)}",
                )
        low = p1 < LOW_CONFIDENCE
        if low and not self._low:
            self._event("low", n, picture, f"{self.labels.get(top1, top1)} at {p1:.0%}")
        self._low = low
        err = rec["err"]
        if err is not None and (len(self._unstable) < UNSTABLE_KEPT or err > self._unstable[0][0]):
            item = (err, n, _jpeg_uri(picture))
            (heapq.heappush if len(self._unstable) < UNSTABLE_KEPT else heapq.heapreplace)(
                self._unstable, item
            )

    # -- the end --------------------------------------------------------------------------------------------
    def finish_video(self) -> bytes:
        """Close the review video and return its bytes (MP4)."""
        t0 = time.thread_time()
        if self._writer is None:
            raise RuntimeError("no frame was recorded")
        self._writer.close()
        data = (self._dir / "review.mp4").read_bytes()
        self.own_s += time.thread_time() - t0
        return data

    def unstable_threshold(self) -> float | None:
        errs = np.array([f["err"] for f in self.frames if f["err"] is not None], dtype=np.float64)
        if errs.size < 3:
            return None
        med = float(np.median(errs))
        mad = float(np.median(np.abs(errs - med))) * 1.4826
        return med + 3 * max(mad, 1e-4)

    def page_events(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every event kept (sorted by frame) and the count of each kind (including those not kept)."""
        threshold = self.unstable_threshold()
        unstable = sorted(
            (x for x in self._unstable if threshold is not None and x[0] > threshold), key=lambda x: x[1]
        )
        self.events["unstable"] = [
            {"f": n, "text": f"warping error {e:.3f}", "thumb": th} for e, n, th in unstable
        ]
        counts = dict(self.event_counts)
        counts["unstable"] = sum(
            1 for f in self.frames if threshold is not None and f["err"] is not None and f["err"] > threshold
        )
        out = [{"kind": k, **e} for k, es in self.events.items() for e in es]
        return sorted(out, key=lambda e: (e["f"], e["kind"])), counts

    def median_timings(self) -> dict[str, float]:
        return {k: round(float(np.median(v)), 3) for k, v in self.timings.items() if v}

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close(complete=False)
            except Exception:  # noqa: BLE001 - a temporary file; the folder goes anyway
                pass
        shutil.rmtree(self._dir, ignore_errors=True)
