"""``rtsal video IN -o OUT``: every frame of a video file explained, real codecs, audio kept, nothing lost.

Decoding, inference and encoding run on three threads (``rtsal.pipeline`` in its no-drop file mode). All
checks that can fail (input, output, codec, container) run before decoding starts. A truncated or corrupt
input still gives a playable output with every frame that decoded (exit 1, one line saying where decoding
stopped); Ctrl-C or SIGTERM flushes the frames done into a playable file (exit 130).
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtsal.commands.common import (
    add_engine_options,
    add_threads_option,
    add_view_options,
    apply_threads,
    check_view_args,
    make_runner,
)
from rtsal.errors import UsageError, VideoIOError
from rtsal.interrupts import Interrupts
from rtsal.names import VIEW_FIELDS
from rtsal.render.frames import resize_maps, select, to_host

TOPK_CSV = 5


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "video",
        help="explain every frame of a video file, write an overlay video (audio kept)",
        description="Explain every frame of a video file and write the explained video: original timestamps "
        "and frame rate, audio copied untouched. Optionally save the raw maps (--maps) and "
        "per-frame classes and timings (--csv).",
    )
    p.add_argument("input", metavar="IN", help="input video file (anything FFmpeg reads)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output video; the container comes from the extension (.mp4, .mkv, .mov, .webm, ...)",
    )
    g = p.add_argument_group("video")
    g.add_argument(
        "--codec",
        default="libx264",
        metavar="NAME",
        help="video encoder: libx264 (default), libx265, libvpx-vp9, mpeg4, mjpeg, ffv1, ...",
    )
    g.add_argument(
        "--crf", type=float, default=23.0, help="x264/x265 quality, 0 (lossless) .. 51 (worst); default 23"
    )
    g.add_argument(
        "--preset",
        default="veryfast",
        help="x264/x265 speed preset: ultrafast .. placebo (default: veryfast)",
    )
    g.add_argument(
        "--pix-fmt",
        default=None,
        metavar="FMT",
        help="output pixel format (default: yuv420p where the encoder takes it: plays everywhere)",
    )
    g.add_argument("--no-audio", action="store_true", help="do not copy the audio streams")
    g.add_argument("--start", type=float, default=None, metavar="SEC", help="first second to process")
    g.add_argument("--end", type=float, default=None, metavar="SEC", help="stop at this second")
    g.add_argument("--batch", type=int, default=4, metavar="N", help="frames per forward pass (default: 4)")
    g.add_argument(
        "--smooth",
        type=float,
        default=0.0,
        metavar="W",
        help="temporal smoothing of the maps: weight of the previous map, 0 (off) .. <1",
    )
    g.add_argument(
        "--maps",
        default=None,
        metavar="OUT.npz",
        help="also save every frame's maps at model resolution (float16) with timestamps",
    )
    g.add_argument(
        "--csv",
        default=None,
        metavar="OUT.csv",
        help="also save per frame: index, pts, top-5 classes and scores, stage timings",
    )
    g.add_argument("--no-labels", action="store_true", help="do not draw the top-3 classes on the frames")
    add_threads_option(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    add_engine_options(p, compile_default=True)
    add_view_options(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Usage checks that need no file and no model."""
    check_view_args(args)
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if not 0.0 <= args.smooth < 1.0:
        raise UsageError(f"--smooth must be within 0..1 (1 excluded), got {args.smooth}")
    if not 0.0 <= args.crf <= 63.0:
        raise UsageError(f"--crf must be within 0..51 (x264) or 0..63 (VP9), got {args.crf:g}")
    if args.start is not None and args.start < 0:
        raise UsageError(f"--start must be >= 0 seconds, got {args.start:g}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.end is not None and args.end <= (args.start or 0.0):
        raise UsageError(f"--end ({args.end:g} s) must come after --start ({args.start or 0.0:g} s)")
    names = [Path(x).resolve() for x in (args.output, args.maps, args.csv) if x]
    if len(set(names)) != len(names):
        raise UsageError("-o, --maps and --csv must name different files")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    from rtsal.io.video import AudioSource, VideoReader, VideoWriter, check_codec, check_output_path

    check_codec(args.codec)
    with VideoReader(args.input, start=args.start, end=args.end) as reader:
        info = reader.info
        for path in (args.output, args.maps, args.csv):
            if path:
                check_output_path(path, args.input)
        audio = None
        if info.audio_streams and not args.no_audio:
            audio = AudioSource(str(reader.path), start=args.start, end=args.end, offset=args.start or 0.0)
        writer = VideoWriter(
            args.output,
            args.codec,
            crf=args.crf,
            preset=args.preset,
            pix_fmt=args.pix_fmt,
            rate=info.rate,
            time_base=info.time_base,
            offset=args.start or 0.0,
            audio=audio,
        )
        apply_threads(args)
        try:
            runner = make_runner(args)
        except BaseException:
            writer.close(complete=False)  # no frame written: the output file is not touched
            raise
        with runner:
            try:
                job = VideoJob(args, reader, writer, runner)
            except BaseException:
                writer.close(complete=False)
                raise
            return job.run()


@dataclass(frozen=True)
class FrameResult:
    """Frame ``i`` of a batch explained together; ``timings`` are that batch's milliseconds per frame."""

    result: Any  # SaliencyResult of the whole batch
    i: int
    timings: dict[str, float]
    batch: int


class BatchInfer:
    """The infer stage: one forward pass per batch of frames. For the engine, maps stay at model resolution
    (the render stage upsamples only the maps its view draws); other methods return frame-size maps."""

    def __init__(self, runner: Any, method: str, target: int | None) -> None:
        from rtsal.engine.explainer import Explainer
        from rtsal.names import METHODS

        self.runner = runner
        self.target = target
        # the Explainer itself, or the one a method runner wraps
        self.explainer = runner if isinstance(runner, Explainer) else getattr(runner, "explainer", None)
        self.model_res = isinstance(self.explainer, Explainer) and METHODS[method].engine

    def __call__(self, frames: list) -> list[FrameResult]:
        import numpy as np

        images = np.stack([f.image for f in frames])
        t0 = time.perf_counter()
        if self.model_res:
            x = self.explainer.preprocess(images)
            t1 = time.perf_counter()
            result = self.runner.explain(x, target=self.target)
            timings = dict(result.timings)
            timings["preprocess"] = timings.get("preprocess", 0.0) + (t1 - t0) * 1e3
        else:
            result = self.runner.explain(images, target=self.target)
            timings = dict(result.timings)
        n = len(frames)
        per_frame = {k: v / n for k, v in timings.items()}
        return [FrameResult(result, i, per_frame, n) for i in range(n)]


class VideoJob:
    """One ``rtsal video`` run: owns the outputs, renders and writes each frame, finishes on every path."""

    def __init__(self, args: argparse.Namespace, reader: Any, writer: Any, runner: Any) -> None:
        from rtsal.progress import Progress
        from rtsal.render.views import make_view

        self.args = args
        self.reader = reader
        self.info = reader.info
        self.writer = writer
        self.runner = runner
        self.view = make_view(args.view, args.cmap, args.alpha)
        self.fields = VIEW_FIELDS[args.view]
        self.smoother = None
        if args.smooth > 0:
            from rtsal.render.smooth import MapSmoother

            self.smoother = MapSmoother(args.smooth)
        self.infer = BatchInfer(runner, args.method, args.target)
        self.maps: Any = None
        self.csv_file: Any = None
        self.csv: Any = None
        self.written = 0
        self.last_pts: float | None = None
        self.progress = Progress(
            self._expected_frames(), "frames", enabled=False if args.no_progress else None
        )

    def _expected_frames(self) -> int | None:
        info, a = self.info, self.args
        if info.frames and a.start is None and a.end is None:
            return info.frames
        if not info.duration or not info.fps:
            return None
        t0 = max(a.start or 0.0, info.start)
        t1 = min(a.end if a.end is not None else float("inf"), info.start + info.duration)
        return max(1, int(round((t1 - t0) * info.fps)))

    # -- outputs ------------------------------------------------------------------------------------------
    def _open_side_outputs(self) -> None:
        a = self.args
        if a.maps:
            from rtsal.io.maps import MapsWriter

            source = self.infer.explainer or self.runner
            names = list(getattr(source, "class_names", ()) or ())
            self.maps = MapsWriter(
                a.maps,
                meta={
                    "source": str(self.reader.path),
                    "model": a.model,
                    "method": a.method,
                    "frame_size": [self.info.height, self.info.width],
                    "class_names": names,
                },
            )
        if a.csv:
            try:
                self.csv_file = open(a.csv, "w", newline="", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise VideoIOError(f"cannot write {a.csv}: {exc.strerror or exc}") from None
            self.csv = csv.writer(self.csv_file)
            head = ["index", "pts"]
            for k in range(1, TOPK_CSV + 1):
                head += [f"class{k}", f"label{k}", f"score{k}"]
            head += [
                "target",
                "preprocess_ms",
                "forward_ms",
                "saliency_ms",
                "render_ms",
                "encode_ms",
                "batch",
                "engine",
            ]
            self.csv.writerow(head)

    def _close_outputs(self, complete: bool) -> BaseException | None:
        """Close every output (each in turn, whatever the others do); the first error, if any."""
        first: BaseException | None = None
        for close in (
            self.progress.close,
            lambda: self.writer.close(complete=complete),
            self.maps.close if self.maps else None,
            self.csv_file.close if self.csv_file else None,
        ):
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                first = first or exc
        return first

    # -- the stages' callbacks ----------------------------------------------------------------------------
    def render(self, frame: Any, fr: FrameResult) -> None:

        from rtsal.render.views import draw_topk

        t0 = time.perf_counter()
        one = select(fr.result, fr.i)
        h, w = frame.image.shape[:2]
        if self.maps is not None:
            self._save_maps(frame, one, (h, w))
        small = to_host(one, self.fields)
        if self.smoother is not None:
            small = self.smoother(small, self.fields)
        big = resize_maps(small, (h, w), self.fields)
        out = self.view.annotate(frame.image, big, 0)
        if not self.args.no_labels:
            draw_topk(out, big, 0)
        t1 = time.perf_counter()
        self.writer.write(out, frame.pts, frame.extra)
        t2 = time.perf_counter()
        self.written += 1
        self.last_pts = frame.pts
        if self.csv is not None:
            self._csv_row(frame, one, fr, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
        self.progress.update()

    def _save_maps(self, frame: Any, one: Any, size: tuple[int, int]) -> None:
        import numpy as np

        from rtsal.engine.preprocess import model_size

        fields = ("saliency", "smoe", "cam", "scales")
        one = to_host(one, fields)
        if not self.infer.model_res:  # frame-size maps from a comparison method: average down
            one = resize_maps(one, model_size(*size, self.args.size), fields)
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
        self.maps.add(**arrays)

    def _csv_row(self, frame: Any, one: Any, fr: FrameResult, render_ms: float, encode_ms: float) -> None:
        row: list[Any] = [frame.index, f"{frame.pts:.6f}"]
        ids = one.topk.indices[0].tolist()
        probs = one.topk.probs[0].tolist()
        labels = one.topk.labels[0]
        for k in range(TOPK_CSV):
            row += [ids[k], labels[k], f"{probs[k]:.6f}"] if k < len(ids) else ["", "", ""]
        t = fr.timings
        row += [
            int(one.target[0]),
            f"{t.get('preprocess', 0.0):.3f}",
            f"{t.get('forward', 0.0):.3f}",
            f"{t.get('saliency', 0.0):.3f}",
            f"{render_ms:.3f}",
            f"{encode_ms:.3f}",
            fr.batch,
            one.engine,
        ]
        self.csv.writerow(row)
        self.csv_file.flush()  # a row per frame done, also when the run is cut short

    # -- the run ------------------------------------------------------------------------------------------
    def run(self) -> int:
        from rtsal.pipeline import run_pipeline

        error: BaseException | None = None
        interrupted = False
        stats = None
        t0 = time.perf_counter()
        with Interrupts() as signals:
            try:
                self._open_side_outputs()
                stats = run_pipeline(self.reader, self.infer, self.render, live=False, batch=self.args.batch)
            except KeyboardInterrupt:
                interrupted = True
            except Exception as exc:  # noqa: BLE001 - finish the outputs first, then report it
                error = exc
            with signals.deferred():  # a second Ctrl-C must not leave a half-written file
                close_error = self._close_outputs(complete=error is None and not interrupted)
            interrupted = interrupted or signals.pending
        elapsed = time.perf_counter() - t0
        out = self.args.output
        done = f"{self.written} frame(s) written to {out}" if self.written else f"no frame written; no {out}"
        if interrupted:
            print(f"rtsal video: interrupted: {done}", file=sys.stderr)
            raise KeyboardInterrupt
        if error is not None:
            if isinstance(error, VideoIOError) and getattr(error, "stage", None) == "capture":
                raise VideoIOError(f"{error}; {done}") from None
            raise error
        if close_error is not None:
            raise close_error
        self._summary(stats, elapsed)
        return 0

    def _summary(self, stats: Any, elapsed: float) -> None:
        info, w = self.info, self.writer
        span = 0.0
        if self.written and self.last_pts is not None:
            first = self.args.start if self.args.start is not None else info.start
            span = max(0.0, self.last_pts - first) + (1.0 / info.fps if info.fps else 0.0)
        fps = self.written / elapsed if elapsed > 0 else 0.0
        speed = f" = {span / elapsed:.2f}x real time" if elapsed > 0 and span else ""
        audio = ""
        if getattr(w, "audio_streams", 0):
            audio = f", audio copied ({w.audio_streams} stream(s))"
        size = f"{w.width}x{w.height}" if self.written else "-"
        print(
            f"wrote {self.args.output}: {self.written} frames, {size} {w.codec_name}{audio}; "
            f"{fps:.1f} frames/s{speed}"
        )
        extra = [p for p in (self.args.maps, self.args.csv) if p]
        if extra:
            print(f"also wrote {', '.join(extra)}")
