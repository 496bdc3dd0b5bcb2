"""``rtsal webcam``: the live overlay. A camera (or ``--source``) -> capture, infer and render threads -> a
window with the HUD and hotkeys, nothing (``--no-window``) and/or an MP4 (``--record``)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtsal.commands.common import (
    add_engine_options,
    add_threads_option,
    add_view_options,
    check_view_args,
)
from rtsal.errors import UsageError, VideoIOError
from rtsal.names import CMAPS, VIEWS


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
    src.add_argument("--fps", type=float, default=None,
                     help="requested camera frame rate (for a glob --source: its rate)")
    add_live_options(p)
    add_engine_options(p, compile_default=True)
    add_view_options(p)
    return p


def add_live_options(p: argparse.ArgumentParser) -> None:
    """Output and run options shared by ``webcam`` and ``demo``."""
    g = p.add_argument_group("output")
    g.add_argument("--smooth", type=float, default=0.0, metavar="0..1",
                   help="temporal smoothing of the maps: weight of the previous frames (default: 0, off)")
    g.add_argument("--no-window", action="store_true", help="no window (null sink); use with --record")
    g.add_argument("--record", default=None, metavar="OUT.mp4",
                   help="also write what is shown to an MP4 file")
    g.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N rendered frames")
    add_threads_option(g)
    g.add_argument("--stats-json", default=None, metavar="FILE",
                   help="write per-stage medians, FPS, drops and overhead to FILE at exit")
    g.add_argument("--snapshot-dir", default=".", metavar="DIR",
                   help="where the s key saves PNG snapshots (default: .)")


def check_live_args(args: argparse.Namespace) -> None:
    check_view_args(args)
    if not 0.0 <= args.smooth < 1.0:
        raise UsageError(f"--smooth must be within 0..1 (1 excluded), got {args.smooth}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")
    for name in ("width", "height", "fps"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise UsageError(f"--{name} must be positive, got {value}")
    if args.stats_json:
        parent = Path(args.stats_json).parent
        if not parent.is_dir():
            raise VideoIOError(f"--stats-json {args.stats_json}: no such directory {parent}")


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


def run_live(args: argparse.Namespace, source: Any, recorder: Any, title: str) -> int:
    """Explain ``source`` on the pipeline into the window (or null sink) and ``recorder``; print a summary.

    The model is loaded first and the window opened after it, so that the window shows frames as it appears.
    """
    from rtsal.commands.common import apply_threads, make_runner

    session = runner = sink = None
    try:
        if recorder is not None and getattr(source, "fps", None):
            recorder.fps = float(source.fps)
        apply_threads(args)
        runner = make_runner(args)
        sink = make_sink(args)
        session = LiveSession(args, runner, sink, recorder, live=bool(source.live))
        stats = session.run(source)
    except KeyboardInterrupt:
        if session is not None:
            session.finish(interrupted=True)
        raise
    finally:
        source.close()  # the pipeline closes it too; this covers a failure before the pipeline started
        if session is not None:
            session.close()
        else:
            for closer in (recorder, sink):
                if closer is not None:
                    closer.close()
            if runner is not None:
                runner.__exit__(None, None, None)
    summary = session.summary(stats)
    session.write_stats(summary)
    print(f"{title}: {format_summary(summary)}")
    if recorder is not None:
        print(f"{title}: recorded {recorder.frames} frames to {Path(recorder.path).resolve()}")
    return 0


def format_summary(s: dict[str, Any]) -> str:
    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.1f} ms"

    pct = s.get("saliency_overhead_pct")
    return (f"{s['rendered']} frames in {s['elapsed_s']:.1f} s, {s['fps']:.1f} fps, "
            f"dropped {s['dropped']} of {s['captured']}; latency median {ms(s['latency_ms']['median'])}; "
            f"forward {ms(s['forward_ms'])}, saliency {ms(s['saliency_ms'])}"
            + ("" if pct is None else f" (+{pct:.1f}%)"))


class LiveSession:
    """Everything one live run shares between the pipeline's stages and the main (GUI) thread."""

    def __init__(self, args: argparse.Namespace, runner: Any, sink: Any, recorder: Any, live: bool) -> None:
        from rtsal.render.hotkeys import Hotkeys, LiveState
        from rtsal.names import METHODS
        from rtsal.pipeline import LatestSlot, PipelineMonitor
        from rtsal.render.hud import DropWatch, Hud
        from rtsal.render.smooth import MapSmoother
        from rtsal.telemetry import FpsMeter, StageTimer

        self.args = args
        self.runner = runner  # owns the explainer (closes it at the end)
        self.runner_method = args.method
        self._runners: dict[str, Any] = {args.method: runner}
        self.sink = sink
        self.recorder = recorder
        self.live = live
        self.state = LiveState(method=args.method, view=args.view, cmap=args.cmap, alpha=args.alpha,
                               target=args.target)
        self.hotkeys = Hotkeys(self.state, tuple(METHODS), VIEWS, CMAPS)
        self.monitor = PipelineMonitor()
        self.hud = Hud()
        self.drops = DropWatch()
        self.smoother = MapSmoother(args.smooth)
        self.fps = FpsMeter()
        self.forward = StageTimer("forward", window=30)
        self.saliency = StageTimer("saliency", window=30)
        self.forward_all = StageTimer("forward")
        self.saliency_all = StageTimer("saliency")
        self.shown_latency = StageTimer("display latency")  # the whole run, for --stats-json
        self.recent_latency = StageTimer("display latency", window=30)  # rolling, for the HUD
        self.display = LatestSlot()
        self.stop = threading.Event()
        self.t0: float | None = None
        self.t_start = time.perf_counter()
        self.last_plain = None  # the last annotated frame without the HUD (redrawn while paused)
        self.last_shown = None
        self.last_topk: list[int] = []
        self.snapshots_saved = 0
        self.rendered_frames = 0
        self.engine: str | None = None  # which engine drew the last frame (the HUD says)
        self._views: dict[tuple, Any] = {}
        self.stats = None

    # -- infer thread -----------------------------------------------------------------------------------
    def infer(self, frames: list) -> list:
        import numpy as np

        from rtsal.names import METHODS

        if self.state.paused:
            return [None] * len(frames)
        runner = self._runner_for(self.state.method)
        images = frames[0].image if len(frames) == 1 else np.stack([f.image for f in frames])
        explainer = getattr(runner, "explainer", runner)
        if METHODS[self.state.method].engine and hasattr(explainer, "preprocess"):
            # engine maps stay at model resolution; the render stage resizes only what its view draws
            result = runner.explain(explainer.preprocess(images), target=self.state.target)
        else:
            result = runner.explain(images, target=self.state.target)
        return [(result, i) for i in range(len(frames))]

    def _runner_for(self, method: str) -> Any:
        """The runner for ``method`` (hotkey m): built once on the same explainer, so no model is reloaded."""
        runner = self._runners.get(method)
        if runner is None:
            from rtsal.methods import build_runner

            explainer = getattr(self.runner, "explainer", self.runner)
            runner = build_runner(method, explainer, layer=getattr(self.args, "target_layer", None),
                                  cskip=getattr(self.args, "cskip", 16), close_explainer=False)
            self._runners[method] = runner
        self.runner_method = method
        return runner

    # -- render thread ----------------------------------------------------------------------------------
    def render(self, frame: Any, item: Any) -> bool:
        from rtsal.names import METHODS
        from rtsal.render.frames import resize_maps, select, to_host
        from rtsal.render.hud import HudInfo
        from rtsal.names import VIEW_FIELDS
        from rtsal.render.views import draw_topk, make_view

        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = frame.t_capture
        s = self.state
        if item is None:  # paused: keep the last picture, with the HUD saying so
            if self.last_plain is None:
                return True
            plain = self.last_plain
        else:
            batch, i = item
            fields = VIEW_FIELDS.get(s.view, ("saliency",))
            one = self.smoother(to_host(select(batch, i), fields), fields)
            one = resize_maps(one, frame.image.shape[:2], fields)
            key = (s.view, s.cmap, s.alpha)
            view = self._views.get(key)
            if view is None:
                self._views.clear()
                view = self._views[key] = make_view(*key)
            plain = view.annotate(frame.image, one, 0)
            # label size from the camera frame's width, also on the wider side-by-side and grid views
            draw_topk(plain, one, 0, k=3, scale=max(0.4, min(1.0, frame.image.shape[1] / 900)))
            self.last_plain = plain
            self.last_topk = [int(v) for v in one.topk.indices[0].tolist()]
            timings = batch.timings or {}
            self.engine = batch.engine
            n = max(1, len(batch.topk.labels))
            for timer, timer_all, name in ((self.forward, self.forward_all, "forward"),
                                           (self.saliency, self.saliency_all, "saliency")):
                if name in timings:
                    timer.add(timings[name] / n)
                    timer_all.add(timings[name] / n)
            self.fps.tick(now)
            self.rendered_frames += 1
        dropped = self.monitor.snapshot()["dropped"]
        recent = self.recent_latency
        latency = recent.median() if recent.count else (now - frame.t_capture) * 1e3
        method_info = METHODS.get(s.method)
        pinned = None
        if s.target is not None:
            names = getattr(self.runner, "class_names", None)
            pinned = names[s.target] if names and 0 <= s.target < len(names) else str(s.target)
        info = HudInfo(
            fps=self.fps.fps(now), latency_ms=latency,
            forward_ms=self.forward.median() if self.forward.count else None,
            saliency_ms=self.saliency.median() if self.saliency.count else None,
            dropped=dropped, method=s.method, cost=method_info.cost if method_info else "?",
            behind=self.drops.update(dropped, now), paused=s.paused, pinned=pinned,
            engine=self.engine,
        )
        shown = self.hud.annotate(plain, info, help=s.help)
        if self.recorder is not None and item is not None:
            t = frame.t_capture - self.t0 if self.live or frame.pts is None else frame.pts
            self.recorder.write(shown, t)
        self.display.put((shown, frame.t_capture))
        if self.args.max_frames is not None and self.rendered_frames >= self.args.max_frames:
            return False
        return True

    # -- main thread ------------------------------------------------------------------------------------
    def main_loop(self) -> bool:
        item = self.display.get(0.0)
        if item is not None and not isinstance(item, tuple):
            item = None  # end-of-stream marker
        if item is not None:
            shown, t_capture = item
            self.sink.show(shown)
            latency_ms = (time.perf_counter() - t_capture) * 1e3
            self.shown_latency.add(latency_ms)
            self.recent_latency.add(latency_ms)
            self.last_shown = shown
        key = self.sink.poll_key(1)
        if key != -1:
            action = self.hotkeys.press(key, topk=self.last_topk)
            if action == "snapshot":
                self._snapshot()
            if action in ("view", "method"):
                self.smoother.reset()
        return not (self.state.quit or self.sink.closed_by_user())

    def _snapshot(self) -> None:
        from rtsal.io.images import write_rgb

        if self.last_shown is None:
            return
        out = Path(self.args.snapshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.snapshots_saved += 1
        path = out / f"rtsal-snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{self.snapshots_saved}.png"
        write_rgb(path, self.last_shown)
        print(f"saved {path}", file=sys.stderr)

    # -- lifetime ---------------------------------------------------------------------------------------
    def run(self, source: Any):
        from rtsal.pipeline import run_pipeline

        main_loop: Callable[[], bool] | None = None if self._null_sink() else self.main_loop
        self.t_start = time.perf_counter()
        self.stats = run_pipeline(source, self.infer, self.render, live=self.live, stop=self.stop,
                                  monitor=self.monitor, main_loop=main_loop)
        return self.stats

    def _null_sink(self) -> bool:
        from rtsal.io.sinks import NullSink

        return isinstance(self.sink, NullSink)

    def finish(self, interrupted: bool) -> None:
        """After Ctrl-C: the stats so far still go to --stats-json and the terminal."""
        from rtsal.pipeline import stats_of

        summary = self.summary(stats_of(self.monitor, time.perf_counter() - self.t_start), interrupted=True)
        self.write_stats(summary)
        print(f"interrupted: {format_summary(summary)}", file=sys.stderr)

    def close(self) -> None:
        try:
            if self.recorder is not None:
                self.recorder.close()
        finally:
            try:
                self.sink.close()
            finally:
                for runner in self._runners.values():  # the hotkey-built ones first, the owner last
                    if runner is not self.runner:
                        runner.close()
                self.runner.close()

    def summary(self, stats: Any, interrupted: bool = False) -> dict[str, Any]:
        import math
        from dataclasses import asdict

        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return None if math.isnan(v) else round(v, 3)
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        fwd = self.forward_all.median() if self.forward_all.count else None
        sal = self.saliency_all.median() if self.saliency_all.count else None
        out = clean(asdict(stats))
        out.update(clean({
            "forward_ms": fwd,
            "saliency_ms": sal,
            "saliency_overhead_pct": 100.0 * sal / fwd if fwd and sal is not None else None,
            "display_latency_ms": self.shown_latency.summary() if self.shown_latency.count else None,
        }))
        out.update(model=self.args.model, method=self.state.method, live=self.live, interrupted=interrupted,
                   smooth=self.args.smooth, size=self.args.size)
        return out

    def write_stats(self, summary: dict[str, Any]) -> None:
        if not self.args.stats_json:
            return
        path = Path(self.args.stats_json)
        try:
            path.write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise VideoIOError(f"cannot write {path}: {exc.strerror or exc}") from None
