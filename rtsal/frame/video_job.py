"""One video file explained into an overlay video: decode -> infer -> render + encode on the pipeline's
three threads, every frame in order, original timestamps and audio kept, outputs written atomically.

``rtsal video`` and ``rtsal batch`` both run :class:`VideoJob`:

    with VideoJob("in.mp4", "out.mp4", VideoSettings(view="lovi")) as job:   # checks and opens, no model
        summary = job.run(frame_explainer)                                     # the model's work

Nothing is lost: every output is checked before any work (:func:`rtsal.outputs.check_outputs`), written to
a temporary file and moved into place when finished; SIGINT, SIGTERM and SIGHUP finish the frames done into
a playable file (then :class:`rtsal.errors.Interrupted`); zero frames written is an error and leaves an
older file as it was.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.errors import Interrupted, VideoIOError
from rtsal.frame.render import FrameRenderer
from rtsal.interrupts import Interrupts
from rtsal.io.video import DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PRESET
from rtsal.outputs import AtomicPath, check_outputs
from rtsal.pipeline import PipelineMonitor

if TYPE_CHECKING:
    from rtsal.frame.infer import FrameExplainer, FrameResult
    from rtsal.types import Frame

__all__ = ["MIN_SIDE", "VideoJob", "VideoSettings", "VideoSummary"]

TOPK_CSV = 5
MIN_SIDE = 8  # frames smaller than this on a side cannot be explained meaningfully
CSV_HEAD = (
    ["index", "pts"]
    + [f"{c}{k}" for k in range(1, TOPK_CSV + 1) for c in ("class", "label", "score")]
    + ["target", "preprocess_ms", "forward_ms", "saliency_ms", "render_ms", "encode_ms", "batch", "engine"]
    + ["window_start", "window_end"]  # clip models: the frames of the clip this frame's map comes from
    # temporal stability (rtsal.eval.temporal): warping error of the drawn map from the previous frame and
    # the fraction of pixels the flow's forward-backward check kept (empty for the first frame)
    + ["temporal_error", "temporal_valid"]
)


@dataclass(frozen=True)
class VideoSettings:
    """How a video is drawn and encoded (the ``rtsal video`` options that are not the engine's)."""

    view: str = "overlay"
    cmap: str = "jet"
    alpha: float = 0.5
    smooth: float = 0.0
    labels: bool = True
    batch: int = 1
    start: float | None = None
    end: float | None = None
    codec: str = DEFAULT_CODEC
    crf: float = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    pix_fmt: str | None = None
    audio: bool = True
    progress: bool | None = None  # None: a bar only on a terminal
    streams: int = 1  # inference streams (see rtsal.streams)


@dataclass(frozen=True)
class VideoSummary:
    """What a finished (or interrupted) job wrote."""

    output: str
    frames: int
    elapsed_s: float
    span_s: float  # seconds of video covered by the frames written
    width: int
    height: int
    codec: str
    audio_streams: int
    interrupted: bool = False
    # the pipeline's counters, as ``rtsal webcam --stats-json`` has them: captured, processed, dropped,
    # rendered, fps, stage_ms, latency_ms, streams, cpu_ms (per stage and sub-stage, incl. "encode"),
    # cpu_ms_process_per_frame, rss_mb, threads_per_stream
    stats: dict[str, Any] | None = None
    engines: dict[str, int] | None = None  # frames per backend that drew them: openvino, eager (building ..)

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def realtime(self) -> float | None:
        """Video seconds per wall-clock second, when the timestamps say how long the video is."""
        return self.span_s / self.elapsed_s if self.elapsed_s > 0 and self.span_s > 0 else None

    def line(self) -> str:
        speed = f" = {self.realtime:.2f}x real time" if self.realtime else ""
        audio = f", audio copied ({self.audio_streams} stream(s))" if self.audio_streams else ""
        drawn = ""
        if self.engines:
            drawn = "; drawn by " + ", ".join(f"{k} {v}" for k, v in sorted(self.engines.items(),
                                                                             key=lambda kv: -kv[1]))
        return (
            f"wrote {self.output}: {self.frames} frames, {self.width}x{self.height} {self.codec}{audio}; "
            f"{self.fps:.1f} frames/s{speed}{drawn}"
        )


def expected_frames(info: Any, start: float | None = None, end: float | None = None) -> int | None:
    """The number of frames to expect from a video's ``VideoInfo`` (for the progress bar's ETA), when the
    container says it plausibly: a declared count only when the duration backs it, else duration x rate;
    None when neither can be trusted (no ETA rather than a wrong one)."""
    by_time = None
    if info.duration and _plausible_rate(info.fps):
        t0 = max(start or 0.0, info.start)
        t1 = min(end if end is not None else float("inf"), info.start + info.duration)
        by_time = max(1, int(round((t1 - t0) * info.fps)))
    if info.frames and start is None and end is None:
        if by_time is None or info.frames <= 2 * by_time + 10:  # a declared count the duration backs
            return info.frames
    return by_time


def _plausible_rate(fps: float | None) -> bool:
    return fps is not None and math.isfinite(fps) and 1.0 <= fps <= 1000.0


class VideoJob:
    """Opens and checks one video and its outputs (no model needed); :meth:`run` explains it.

    Args:
        input: the video file.
        output: the overlay video (container from the extension).
        settings: drawing and encoding options.
        maps: optional ``.npz`` of every frame's maps at model resolution (float16).
        csv_path: optional CSV, one row per frame (top-5 classes, target, stage timings, temporal stability).
        report: optional review page (self-contained HTML, :mod:`rtsal.report`).
        meta: extra metadata stored in the ``.npz`` (model, method); ``options`` (the command's options) goes
            to the review page only.
        inputs: other files the run reads (weights, an ONNX file): no output may replace them.
    """

    def __init__(
        self,
        input: str | Path,
        output: str | Path,
        settings: VideoSettings = VideoSettings(),  # noqa: B008 - frozen, so a shared default is safe
        *,
        maps: str | Path | None = None,
        csv_path: str | Path | None = None,
        meta: dict[str, Any] | None = None,
        inputs: Sequence[str | Path] = (),
        report: str | Path | None = None,
    ) -> None:
        from rtsal.io.video import AudioSource, VideoReader, VideoWriter, check_codec

        self.settings = s = settings
        self.output = str(output)
        self.maps_path, self.csv_path, self.report_path = maps, csv_path, report
        self.meta = dict(meta or {})
        check_codec(s.codec)
        check_outputs(
            [input, *inputs], [("-o", output), ("--maps", maps), ("--csv", csv_path), ("--report", report)]
        )
        self.reader = VideoReader(input, start=s.start, end=s.end)
        try:
            info = self.info = self.reader.info
            if min(info.width, info.height) < MIN_SIDE:
                raise VideoIOError(
                    f"{input}: frames are {info.width}x{info.height}; "
                    f"rtsal needs at least {MIN_SIDE} pixels a side"
                )
            audio = None
            if info.audio_streams and s.audio:
                audio = AudioSource(str(self.reader.path), start=s.start, end=s.end, offset=s.start or 0.0)
            self.writer = VideoWriter(
                output,
                s.codec,
                crf=s.crf,
                preset=s.preset,
                pix_fmt=s.pix_fmt,
                rate=info.rate,
                time_base=info.time_base,
                offset=s.start or 0.0,
                audio=audio,
            )
        except BaseException:
            self.reader.close()
            raise
        self.monitor = PipelineMonitor()
        self.renderer = FrameRenderer(s.view, s.cmap, s.alpha, smooth=s.smooth, labels=3 if s.labels else 0,
                                      cpu=self.monitor.cpu)
        self.written = 0
        self.engines: dict[str, int] = {}  # frames written per backend that drew them (the summary says)
        self.last_pts: float | None = None
        self.first_pts: float | None = None
        self._maps: Any = None
        self._csv_atomic: AtomicPath | None = None
        self._csv_file: io.TextIOWrapper | None = None
        self._csv: Any = None
        self._progress: Any = None
        self._model_res = True
        self._review: Any = None  # rtsal.report.review.VideoReview, with --csv or --report
        self.review_summary: dict[str, Any] | None = None  # the page's summary, once written
        self.stability: dict[str, Any] | None = None  # the warping errors' summary (with --csv or --report)
        self._t0 = time.perf_counter()

    def __enter__(self) -> VideoJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release everything not yet released (a job that never ran leaves no file behind)."""
        self._close_outputs(complete=False, keep=False)
        self.reader.close()

    # -- the run ------------------------------------------------------------------------------------------
    def run(self, explainer: FrameExplainer, batch: int | None = None) -> VideoSummary:
        """Explain every frame with ``explainer`` and write the outputs. Raises :class:`Interrupted` after a
        signal (the frames done are in the output), the decoding error with the count of frames written, or
        VideoIOError when no frame was written. ``batch`` overrides the settings' frames per infer call
        (a clip model's window stride, see :mod:`rtsal.frame.clips`)."""
        from rtsal.pipeline import run_pipeline

        error: BaseException | None = None
        interrupted = False
        self.monitor = monitor = PipelineMonitor()
        self.renderer.cpu = monitor.cpu
        t0, cpu0 = time.perf_counter(), time.process_time()
        self._t0 = t0
        stats = None
        with Interrupts() as signals:
            try:
                explainer.reset()  # a new video: no window of frames from the last one
                self._open_side_outputs(explainer)
                stats = run_pipeline(self.reader, explainer, self._render, live=False, monitor=monitor,
                                     batch=batch or self.settings.batch,
                                     streams=1 if explainer.sequential else self.settings.streams)
            except KeyboardInterrupt:
                interrupted = True
            except Exception as exc:  # noqa: BLE001 - finish the outputs first, then report it
                error = exc
            with signals.deferred():  # a second Ctrl-C must not leave a half-written file
                close_error = self._close_outputs(
                    complete=error is None and not interrupted, keep=self.written > 0
                )
            interrupted = interrupted or signals.pending
        elapsed = time.perf_counter() - t0
        done = (
            f"{self.written} frame(s) written to {self.output}"
            if self.written
            else f"no frame written; {self.output} left as it was"
        )
        if interrupted:
            raise Interrupted(f"interrupted: {done}", code=signals.code)
        if error is not None:
            if isinstance(error, VideoIOError) and getattr(error, "stage", None) == "capture":
                raise VideoIOError(f"{error}; {done}") from None
            raise error
        if close_error is not None:
            raise close_error
        if not self.written:
            raise VideoIOError(f"no frame of {self.reader.path} in the chosen range; {done}")
        return self._summary(elapsed, self._stats(stats, time.process_time() - cpu0))

    def _stats(self, stats: Any, cpu_s: float) -> dict[str, Any] | None:
        import sys
        from dataclasses import asdict

        from rtsal.telemetry import rss_mb

        if stats is None:
            return None
        out = asdict(stats)
        torch = sys.modules.get("torch")
        out.update(
            cpu_ms_process_per_frame=cpu_s * 1e3 / max(1, self.written),
            rss_mb=rss_mb(),
            threads_per_stream=torch.get_num_threads() if torch is not None else None,
        )
        return out

    def _summary(self, elapsed: float, stats: dict[str, Any] | None = None) -> VideoSummary:
        info, w = self.info, self.writer
        span = 0.0
        if self.last_pts is not None and self.first_pts is not None:
            span = max(0.0, self.last_pts - self.first_pts)
            if _plausible_rate(info.fps):
                span += 1.0 / info.fps
        return VideoSummary(
            self.output, self.written, elapsed, span, w.width, w.height, w.codec_name, w.audio_streams,
            stats=stats, engines=dict(self.engines),
        )

    # -- outputs ------------------------------------------------------------------------------------------
    def _expected_frames(self) -> int | None:
        return expected_frames(self.info, self.settings.start, self.settings.end)

    def _open_side_outputs(self, explainer: FrameExplainer) -> None:
        from tqdm import tqdm

        s = self.settings
        disable = None if s.progress is None else not s.progress  # None: tqdm shows it on a terminal only
        self._progress = tqdm(
            total=self._expected_frames(), unit="frame", disable=disable, leave=False, dynamic_ncols=True
        )
        if self.maps_path:
            from rtsal.io.maps import MapsWriter

            self._maps = MapsWriter(
                self.maps_path,
                meta={
                    "source": str(self.reader.path),
                    **{k: v for k, v in self.meta.items() if k != "options"},  # options: the page's
                    "frame_size": [self.info.height, self.info.width],
                    "class_names": list(explainer.class_names),
                },
            )
        if self.csv_path or self.report_path:
            from rtsal.report.review import VideoReview

            self._review = VideoReview(
                self.report_path, smooth=s.smooth, cmap=s.cmap, time_base=self.info.time_base
            )
        if self.csv_path:
            self._csv_atomic = AtomicPath(self.csv_path)
            self._csv_file = open(self._csv_atomic.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow(CSV_HEAD)

    def _close_outputs(self, complete: bool, keep: bool) -> BaseException | None:
        """Close every output (each in turn, whatever the others do); the first error, if any. ``keep``
        moves the finished files into place; otherwise they are removed and older files stay."""
        first: BaseException | None = None

        def finish_csv() -> None:
            if self._csv_file is not None:
                self._csv_file.close()
                self._csv_file = None
            if self._csv_atomic is not None:
                (self._csv_atomic.commit if keep else self._csv_atomic.discard)()
                self._csv_atomic = None

        def finish_maps() -> None:
            if self._maps is not None:
                maps, self._maps = self._maps, None
                maps.close() if keep else maps.abort()

        def finish_review() -> None:
            if self._review is not None:
                review, self._review = self._review, None
                self.stability = review.stability()
                try:
                    if keep and review.recorder is not None and self.written:
                        self._write_report(review)
                finally:
                    review.close()

        for close in (
            self._progress.close if self._progress is not None else None,
            lambda: self.writer.close(complete=complete, keep=keep),
            finish_maps,
            finish_csv,
            finish_review,
        ):
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                first = first or exc
        self._progress = None
        return first

    def _write_report(self, review: Any) -> None:
        """The review page of the frames written (``--report``)."""
        from dataclasses import asdict

        info, s = self.info, self.settings
        elapsed = time.perf_counter() - self._t0
        span = (self.last_pts or 0.0) - (self.first_pts or 0.0)
        title = Path(str(self.reader.path)).name
        model, method = self.meta.get("model", ""), self.meta.get("method", "")
        subtitle = (
            f"{self.written} frames, {span:.1f} s, {info.width}x{info.height}; model {model}, method {method}"
        )
        settings = {**{k: v for k, v in self.meta.items() if k != "options"}, **asdict(s)}
        settings.update(self.meta.get("options", {}))
        run = {
            "input": str(self.reader.path),
            "output": self.output,
            "model": model,
            "method": method,
            "frames": self.written,
            "seconds (run so far)": round(elapsed, 2),
            "frames per second": round(self.written / elapsed, 2) if elapsed > 0 else None,
        }
        review.write_page(title=title, subtitle=subtitle, settings=settings, run=run)
        self.review_summary = review.summary

    # -- the render stage ---------------------------------------------------------------------------------
    def _render(self, frame: Frame, fr: FrameResult) -> None:
        t0 = time.perf_counter()
        out = self.renderer(frame.image, fr)
        t1 = time.perf_counter()
        with self.monitor.cpu.measure("encode"):
            self.writer.write(out, frame.pts, frame.extra)
        t2 = time.perf_counter()
        self.written += 1
        self.engines[fr.result.engine] = self.engines.get(fr.result.engine, 0) + 1
        if self.first_pts is None:
            self.first_pts = frame.pts
        self.last_pts = frame.pts
        if self._maps is not None:
            self._save_maps(frame, fr)
        step = self._review.frame(frame, fr, out) if self._review is not None else None
        if self._csv is not None:
            self._csv_row(frame, fr, (t1 - t0) * 1e3, (t2 - t1) * 1e3, step)
        if self._progress is not None:
            self._progress.update()

    def _save_maps(self, frame: Frame, fr: FrameResult) -> None:
        import numpy as np

        from rtsal.render.frames import select, to_host

        fields = ("saliency", "smoe", "cam", "scales")
        one = to_host(select(fr.result, fr.i), fields)
        arrays = {
            "pts": np.float64(frame.pts),
            "index": np.int64(frame.index),
            "target": np.int64(int(one.target[0])),
            "topk_indices": one.topk.indices[0].cpu().numpy().astype(np.int64),
            "topk_probs": one.topk.probs[0].float().cpu().numpy(),
        }
        for name in fields:
            m = getattr(one, name)
            if m is not None:
                arrays[name] = m[0].astype(np.float16)
        self._maps.add(**arrays)

    def _csv_row(
        self, frame: Frame, fr: FrameResult, render_ms: float, encode_ms: float, step: Any = None
    ) -> None:
        r = fr.result
        row: list[Any] = [frame.index, f"{frame.pts:.6f}"]
        ids = r.topk.indices[fr.i].tolist()
        probs = r.topk.probs[fr.i].tolist()
        labels = r.topk.labels[fr.i]
        for k in range(TOPK_CSV):
            row += [ids[k], labels[k], f"{probs[k]:.6f}"] if k < len(ids) else ["", "", ""]
        t = fr.timings
        row += [
            int(r.target[fr.i]),
            f"{t.get('preprocess', 0.0):.3f}",
            f"{t.get('forward', 0.0):.3f}",
            f"{t.get('saliency', 0.0):.3f}",
            f"{render_ms:.3f}",
            f"{encode_ms:.3f}",
            fr.batch,
            r.engine,  # the backend: openvino, onnxruntime, compiled, eager, eager (building NAME), ...
            *(fr.window if fr.window is not None else ("", "")),
            *(("", "") if step is None else (_num(step.error), f"{step.valid:.4f}")),
        ]
        self._csv.writerow(row)
        self._csv_file.flush()  # a row per frame done, also when the run is cut short


def _num(v: float) -> str:
    return f"{v:.6f}" if math.isfinite(v) else ""
