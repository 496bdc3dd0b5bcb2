"""``rtsal webcam``: the live overlay. A camera (or ``--source``) -> capture, infer and render threads -> a
window with the HUD and hotkeys, nothing (``--no-window``) and/or an MP4 (``--record``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rtsal.commands.common import (
    add_engine_options,
    add_threads_option,
    add_view_options,
    check_engine_args,
    check_view_args,
    engine_inputs,
    finite_float,
)
from rtsal.errors import Interrupted, UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "webcam",
        help="live saliency overlay from a camera or a stream",
        description="Explain a live camera (or any file, URL or image pattern) frame by frame: capture, "
        "inference and rendering run on their own threads; the window shows the map, the top-3 classes "
        "and a HUD with FPS, latency, forward and saliency time. Press h in the window for the hotkeys.",
    )
    src = p.add_argument_group("source")
    src.add_argument("--camera", type=int, default=0, metavar="N", help="camera index (default: 0)")
    src.add_argument("--source", default=None, metavar="FILE|URL|PATTERN",
                     help="read this video file, stream URL, FFmpeg pattern (img_%%04d.png) or glob instead")
    src.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                     help="play a --source file at its own frame rate, dropping frames the model cannot keep "
                     "up with (default), or --no-realtime: every frame, as fast as possible")
    src.add_argument("--width", type=int, default=None, help="requested camera frame width")
    src.add_argument("--height", type=int, default=None, help="requested camera frame height")
    src.add_argument("--fps", type=finite_float, default=None,
                     help="requested camera frame rate (for a glob --source: its rate)")
    add_live_options(p)
    add_engine_options(p, compile_default=True)
    add_view_options(p)
    return p


def add_live_options(p: argparse.ArgumentParser) -> None:
    """Output and run options shared by ``webcam`` and ``demo``."""
    g = p.add_argument_group("output")
    g.add_argument("--smooth", type=finite_float, default=0.0, metavar="0..1",
                   help="temporal smoothing of the maps: weight of the previous frames (default: 0, off)")
    g.add_argument("--no-window", action="store_true", help="no window (null sink); use with --record")
    g.add_argument("--record", default=None, metavar="OUT.mp4",
                   help="also write what is shown to an MP4 file")
    g.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N rendered frames")
    g.add_argument("--clip-len", type=int, default=None, metavar="T",
                   help="clip models: frames in the ring buffer explained as each frame arrives "
                   "(default: the model's, 16 for r3d_18)")
    add_threads_option(g)
    g.add_argument("--stats-json", default=None, metavar="FILE",
                   help="write per-stage medians, FPS, drops and overhead to FILE at exit")
    g.add_argument("--snapshot-dir", default=".", metavar="DIR",
                   help="where the s key saves PNG snapshots (default: .)")


def check_live_args(args: argparse.Namespace) -> None:
    """Usage and output checks that need no model, before anything is opened."""
    from rtsal.outputs import check_outputs

    check_view_args(args)
    check_engine_args(args)
    if not 0.0 <= args.smooth < 1.0:
        raise UsageError(f"--smooth must be within 0..1 (1 excluded), got {args.smooth}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")
    for name in ("width", "height", "fps"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise UsageError(f"--{name} must be positive, got {value}")
    source = getattr(args, "source", None)
    local = source if source and Path(source).exists() else None
    outputs = [("--record", args.record), ("--stats-json", args.stats_json)]
    check_outputs([local, *engine_inputs(args)], outputs)


def run(args: argparse.Namespace) -> int:
    import cv2  # noqa: F401  (OpenCV before PyAV, or the window hangs: see rtsal.io.sinks.check_import_order)

    from rtsal.io.sources import open_source

    check_live_args(args)
    recorder = make_recorder(args)  # checks the path before anything is opened
    source = open_source(camera=args.camera, source=args.source, realtime=args.realtime,
                         width=args.width, height=args.height, fps=args.fps)
    try:
        if not args.no_window:
            from rtsal.io.sinks import check_display

            check_display()
    except BaseException:
        source.close()
        raise
    return run_live(args, source, recorder, title="webcam")


def make_recorder(args: argparse.Namespace):
    """The ``--record`` writer, or None."""
    from rtsal.io.sinks import Mp4Recorder

    return Mp4Recorder(args.record) if args.record else None


def make_sink(args: argparse.Namespace):
    """The window, or the null sink for ``--no-window``."""
    from rtsal.io.sinks import NullSink, Window

    return NullSink() if args.no_window else Window("rtsal")


def live_settings(args: argparse.Namespace):
    from rtsal.frame.live import LiveSettings

    return LiveSettings(view=args.view, cmap=args.cmap, alpha=args.alpha, smooth=args.smooth,
                        max_frames=args.max_frames, snapshot_dir=args.snapshot_dir, model=args.model,
                        size=args.size, window=not args.no_window)


def run_live(args: argparse.Namespace, source: Any, recorder: Any, title: str) -> int:
    """Explain ``source`` on the pipeline into the window (or null sink) and ``recorder``; print a summary.

    The model is loaded first and the window opened after it, so that the window shows frames as it appears.
    ``--stats-json`` is written on every exit: success, error or interrupt.
    """
    from rtsal.commands.common import apply_threads, make_runner
    from rtsal.frame.clips import frame_explainer
    from rtsal.frame.live import LiveSession, format_summary
    from rtsal.interrupts import Interrupts

    session = None
    outcome = "error"
    try:
        try:
            if recorder is not None and getattr(source, "fps", None):
                recorder.fps = float(source.fps)
            apply_threads(args)
            explainer = frame_explainer(make_runner(args), args.method, clip_len=args.clip_len,
                                        target=args.target,
                                        layer=args.target_layer, cskip=args.cskip)
            try:
                sink = make_sink(args)
            except BaseException:
                explainer.close()
                raise
            session = LiveSession(explainer, live_settings(args), sink, recorder, live=bool(source.live))
            with Interrupts() as signals:  # SIGINT, SIGTERM, SIGHUP: finish the recording and the stats
                try:
                    stats = session.run(source)
                except KeyboardInterrupt:
                    raise Interrupted("interrupted", code=signals.code) from None
            outcome = "done"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            source.close()  # the pipeline closes it too; this covers a failure before the pipeline started
            if session is not None:
                session.close()
            elif recorder is not None:
                recorder.close()
    finally:
        if session is not None:
            summary = session.summary(stats if outcome == "done" else None,
                                      interrupted=outcome == "interrupted")
            summary["outcome"] = outcome
            write_stats(args.stats_json, summary)
            if outcome == "interrupted":
                print(f"interrupted: {format_summary(summary)}", file=sys.stderr)
    print(f"{title}: {format_summary(summary)}")
    if recorder is not None:
        print(f"{title}: recorded {recorder.frames} frames to {Path(recorder.path).resolve()}")
    return 0


def write_stats(path: str | None, summary: dict[str, Any]) -> None:
    """``--stats-json``, written atomically."""
    if path:
        from rtsal.outputs import atomic_write_text

        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
