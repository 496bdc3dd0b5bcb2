"""Per frame of ``rtsal video``: the temporal-stability step of the drawn map (for the CSV and the page) and,
with ``--report``, everything the review page shows; at the end, the page.

The map measured is the one the overlay draws: the method's map at model resolution, smoothed as the
overlay smooths it (``--smooth``; the same exponential average, which commutes with the resize), against
the frames' motion (:class:`rtsal.eval.temporal.TemporalMeter`). Runs on the render thread: numpy and
OpenCV only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtsal.eval.temporal import DEFAULT_FLOW, TemporalMeter, TemporalStep, summarise_errors
from rtsal.render.colormap import rgb_lut
from rtsal.render.frames import select, to_host
from rtsal.render.smooth import MapSmoother
from rtsal.report.recorder import LOW_CONFIDENCE, ReviewRecorder

__all__ = ["TOP_SHOWN", "VideoReview", "stability_line"]

TOP_SHOWN = 3  # classes per frame on the page
FLOW_NAMES = {"dis": "OpenCV DIS optical flow, fast preset", "farneback": "OpenCV Farneback optical flow"}


class VideoReview:
    """The temporal step of every frame and, when ``page`` is set, the review page.

    Args:
        page: the HTML file to write at the end (None: the temporal measure only, for the CSV).
        smooth: the overlay's ``--smooth`` weight (the measured map is smoothed the same way).
        cmap: colour map of the page's map tiles (the overlay's).
        time_base: the input's, for the review video's timestamps.
        flow: optical flow method of the measure.
    """

    def __init__(
        self,
        page: str | os.PathLike | None = None,
        *,
        smooth: float = 0.0,
        cmap: str = "jet",
        time_base: Any = None,
        flow: str = DEFAULT_FLOW,
    ) -> None:
        self.page = Path(page) if page is not None else None
        self.cmap = cmap
        self.flow = flow
        self._smoother = MapSmoother(smooth)
        self._meter = TemporalMeter(flow)
        self.recorder = ReviewRecorder(time_base=time_base) if page is not None else None
        self.errors: list[float] = []
        self.layers: tuple[str, ...] = ()
        self.method = ""
        self.own_s = 0.0  # CPU seconds of the render thread spent here
        self.summary: dict[str, Any] | None = None  # set by write_page: the batch index's row

    def frame(self, frame: Any, fr: Any, picture: np.ndarray) -> TemporalStep | None:
        """One frame (:class:`rtsal.types.Frame`), its :class:`rtsal.frame.infer.FrameResult` and the
        picture written -> the step from the previous frame (None for the first)."""
        t0 = time.thread_time()
        rec = self.recorder
        fields = ("saliency", "scales") if rec is not None else ("saliency",)
        one = to_host(select(fr.result, fr.i), fields)
        drawn = self._smoother(one, ("saliency",))
        sal = np.asarray(drawn.saliency, dtype=np.float32)[0]
        step = self._meter(frame.image, sal)
        if step is not None:
            self.errors.append(step.error)
        self.own_s += time.thread_time() - t0
        if rec is not None:
            r = fr.result
            self.method, self.layers = r.method, tuple(r.layers or ())
            ids = r.topk.indices[fr.i].tolist()[:TOP_SHOWN]
            probs = r.topk.probs[fr.i].tolist()[:TOP_SHOWN]
            top = list(zip(ids, r.topk.labels[fr.i][:TOP_SHOWN], probs, strict=False))
            maps = [sal] + (
                [np.asarray(s, np.float32) for s in one.scales[0]] if one.scales is not None else []
            )
            rec.add(
                frame.index,
                frame.pts,
                top,
                maps,
                picture,
                step,
                engine=str(r.engine),
                timings=dict(fr.timings),
            )
        return step

    def tile_names(self, n: int) -> list[str]:
        names = [f"{self.method or 'saliency'} map (as drawn)"]
        names += [f"scale {k + 1}: {name}" for k, name in enumerate(self.layers)]
        names += [f"scale {k + 1}" for k in range(len(names) - 1, n - 1)]
        return names[:n]

    def stability(self) -> dict[str, Any]:
        """The summary of the run's steps (mean, median, p95, n) and the flow used."""
        return {"flow": FLOW_NAMES.get(self.flow, self.flow), "summary": summarise_errors(self.errors)}

    def write_page(self, *, title: str, subtitle: str, settings: dict[str, Any], run: dict[str, Any]) -> Path:
        """Finish the review video and write the page (atomically)."""
        from rtsal.report.page import write_page

        rec = self.recorder
        if rec is None or self.page is None or not rec.frames:
            raise RuntimeError("no review page to write")
        t0 = time.thread_time()
        video = rec.finish_video()
        events, counts = rec.page_events()
        stab = self.stability()
        stab["threshold"] = rec.unstable_threshold()
        n_tiles = rec.layout.tiles if rec.layout else 1
        run = {
            **run,
            "backend (frames)": ", ".join(f"{k} ({v})" for k, v in rec.engines.most_common()),
            "median ms per frame": rec.median_timings(),
            "report CPU ms per frame (flow, atlas, encode, page)": round(
                1e3 * (self.own_s + rec.own_s + time.thread_time() - t0) / len(rec.frames), 2
            ),
        }
        data = {
            "title": title,
            "subtitle": subtitle,
            "frames": rec.frames,
            "labels": {str(k): v for k, v in rec.labels.items()},
            "layout": rec.layout.to_json() if rec.layout else None,
            "tiles": self.tile_names(n_tiles),
            "lut": rgb_lut(self.cmap).reshape(256, 3).tolist(),
            "events": events,
            "event_counts": counts,
            "stability": stab,
            "low_confidence": LOW_CONFIDENCE,
            "settings": settings,
            "run": run,
        }
        path = write_page(self.page, data, video)
        self.summary = {
            "frames": len(rec.frames),
            "duration": round(rec.frames[-1]["t"], 3),
            "classes": _main_classes(rec),
            "stability": stab["summary"],
            "events": counts,
        }
        return path

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def stability_line(stability: dict[str, Any]) -> str:
    """One line: the run's warping errors summarised (``VideoReview.stability()``)."""
    s = stability["summary"]
    if not s["n"]:
        return "temporal stability: no pair of frames to compare"
    return (
        f"temporal stability (warping error of the drawn map, 0 = steady): mean {s['mean']:.4f}, median "
        f"{s['median']:.4f}, 95th percentile {s['p95']:.4f} over {s['n']} frame pairs"
    )


def _main_classes(rec: ReviewRecorder, k: int = 3) -> list[str]:
    from collections import Counter

    c = Counter(f["top"][0][0] for f in rec.frames if f["top"])
    return [f"{rec.labels.get(cid, cid)} ({n})" for cid, n in c.most_common(k)]
