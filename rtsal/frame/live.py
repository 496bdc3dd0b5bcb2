"""One live run: a source on the pipeline's three threads, drawn with the HUD into a window (or the null
sink) and an optional recording, steered by hotkeys from the main thread.

The infer stage is a :class:`~rtsal.frame.infer.FrameExplainer`, the picture comes from a
:class:`~rtsal.frame.render.FrameRenderer`; this module adds what only a live run has: the hotkey state,
the HUD, latency and drop counters, snapshots and the ``--stats-json`` summary.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rtsal.frame.render import FrameRenderer
from rtsal.names import CMAPS, METHODS, VIEWS
from rtsal.pipeline import LatestSlot, PipelineMonitor, run_pipeline, stats_of
from rtsal.render.hotkeys import Hotkeys, LiveState
from rtsal.render.hud import DropWatch, Hud, HudInfo
from rtsal.telemetry import FpsMeter, StageTimer, rss_mb, seconds_since_launch

if TYPE_CHECKING:
    import numpy as np

    from rtsal.frame.infer import FrameExplainer, FrameResult
    from rtsal.types import Frame

__all__ = ["LiveSession", "LiveSettings", "Sink", "format_summary"]


class Sink(Protocol):
    """Where live pictures go: a window, or nothing (:class:`rtsal.io.sinks.NullSink`)."""

    def show(self, rgb: np.ndarray) -> None: ...

    def poll_key(self, delay_ms: int = 1) -> int: ...

    def closed_by_user(self) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LiveSettings:
    """The options of a live run that are not the engine's."""

    view: str = "overlay"
    cmap: str = "jet"
    alpha: float = 0.5
    smooth: float = 0.0
    max_frames: int | None = None
    snapshot_dir: str = "."
    model: str = ""
    size: Any = 224
    window: bool = True  # False: the null sink, no main-thread GUI loop
    streams: int = 1  # inference streams (see rtsal.streams)


def _torch_threads() -> int | None:
    """torch's intra-op threads (per stream), when torch is loaded."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def format_summary(s: dict[str, Any]) -> str:
    """One line for the terminal from :meth:`LiveSession.summary`."""

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.1f} ms"

    pct = s.get("saliency_overhead_pct")
    return (
        f"{s['rendered']} frames in {s['elapsed_s']:.1f} s, {s['fps']:.1f} fps, "
        f"dropped {s['dropped']} of {s['captured']}; latency median {ms(s['latency_ms']['median'])}; "
        f"forward {ms(s['forward_ms'])}, saliency {ms(s['saliency_ms'])}"
        + ("" if pct is None else f" (+{pct:.1f}%)")
    )


class LiveSession:
    """Everything one live run shares between the pipeline's stages and the main (GUI) thread.

    ``explainer`` and ``sink`` and ``recorder`` are owned: :meth:`close` closes them.
    """

    def __init__(
        self, explainer: FrameExplainer, settings: LiveSettings, sink: Sink, recorder: Any, live: bool
    ) -> None:
        self.explainer = explainer
        self.settings = settings
        self.sink = sink
        self.recorder = recorder
        self.live = live
        self.state = LiveState(
            method=explainer.method, view=settings.view, cmap=settings.cmap, alpha=settings.alpha,
            target=explainer.target,
        )
        self.hotkeys = Hotkeys(self.state, explainer.methods, VIEWS, CMAPS)
        self.monitor = PipelineMonitor()
        self.renderer = FrameRenderer(settings.view, settings.cmap, settings.alpha, smooth=settings.smooth,
                                      cpu=self.monitor.cpu)
        self.hud = Hud()
        self.drops = DropWatch()
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
        self.cpu_start = time.process_time()
        self.last_plain = None  # the last annotated frame without the HUD (redrawn while paused)
        self.last_shown = None
        self.last_topk: list[int] = []
        self.snapshots_saved = 0
        self.rendered_frames = 0
        self.threads: int | None = None  # torch threads per stream during the run
        self.engine: str | None = None  # which engine drew the last frame (the HUD says)
        self.plain_ms: float | None = None  # that backend's plain forward pass (the HUD's overhead base)
        self.engines: dict[str, int] = {}  # frames drawn per engine (compiled, eager, eager (compiling), ...)
        # start-up, in seconds since the process started: model loaded, first frame drawn, first compiled one
        self.startup: dict[str, float | None] = {
            "model_loaded_s": seconds_since_launch(), "first_frame_s": None, "first_compiled_s": None}
        self.stats = None

    # -- infer thread -----------------------------------------------------------------------------------
    def infer(self, frames: list[Frame]) -> list[FrameResult | None]:
        s = self.state
        if s.paused:
            return [None] * len(frames)
        if s.method != self.explainer.method:
            self.explainer.set_method(s.method)
        self.explainer.target = s.target
        return list(self.explainer(frames))

    # -- render thread ----------------------------------------------------------------------------------
    def render(self, frame: Frame, item: FrameResult | None) -> bool:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = frame.t_capture
        s = self.state
        if item is None:  # paused: keep the last picture, with the HUD saying so
            if self.last_plain is None:
                return True
            plain = self.last_plain
        else:
            self.renderer.set_style(s.view, s.cmap, s.alpha)
            plain = self.renderer(frame.image, item)
            self.last_plain = plain
            self.last_topk = [int(v) for v in item.result.topk.indices[item.i].tolist()]
            self.engine = item.result.engine
            self.plain_ms = item.result.timings.get("plain")
            self._count_engine(self.engine)
            for timer, timer_all, name in (
                (self.forward, self.forward_all, "forward"),
                (self.saliency, self.saliency_all, "saliency"),
            ):
                if name in item.timings:
                    timer.add(item.timings[name])
                    timer_all.add(item.timings[name])
            self.fps.tick(now)
            self.rendered_frames += 1
        with self.monitor.cpu.measure("hud"):
            shown = self.hud.annotate(plain, self._hud_info(frame, now), help=s.help)
        if self.recorder is not None and item is not None:
            t = frame.t_capture - self.t0 if self.live or frame.pts is None else frame.pts
            self.recorder.write(shown, t)
        self.display.put((shown, frame.t_capture))
        limit = self.settings.max_frames
        return not (limit is not None and self.rendered_frames >= limit)

    def _count_engine(self, engine: str) -> None:
        self.engines[engine] = self.engines.get(engine, 0) + 1
        if self.startup["first_frame_s"] is None:
            self.startup["first_frame_s"] = seconds_since_launch()
        if not engine.startswith("eager") and self.startup["first_compiled_s"] is None:
            self.startup["first_compiled_s"] = seconds_since_launch()

    def _hud_info(self, frame: Frame, now: float) -> HudInfo:
        s = self.state
        dropped = self.monitor.snapshot()["dropped"]
        recent = self.recent_latency
        latency = recent.median() if recent.count else (now - frame.t_capture) * 1e3
        method_info = METHODS.get(s.method)
        pinned = None
        if s.target is not None:
            names = self.explainer.class_names
            pinned = names[s.target] if names and 0 <= s.target < len(names) else str(s.target)
        return HudInfo(
            fps=self.fps.fps(now), latency_ms=latency,
            forward_ms=self.forward.median() if self.forward.count else None,
            saliency_ms=self.saliency.median() if self.saliency.count else None,
            dropped=dropped, method=s.method, cost=method_info.cost if method_info else "?",
            behind=self.drops.update(dropped, now), paused=s.paused, pinned=pinned, engine=self.engine,
            plain_ms=self.plain_ms,
        )

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
                self.renderer.reset()
        return not (self.state.quit or self.sink.closed_by_user())

    def _snapshot(self) -> None:
        from rtsal.io.images import write_rgb

        if self.last_shown is None:
            return
        out = Path(self.settings.snapshot_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.snapshots_saved += 1
        path = out / f"rtsal-snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{self.snapshots_saved}.png"
        write_rgb(path, self.last_shown)
        print(f"saved {path}", file=sys.stderr)

    # -- lifetime ---------------------------------------------------------------------------------------
    def run(self, source: Any) -> Any:
        """Run the pipeline over ``source`` until it ends, a stage stops it, or the user quits."""
        main_loop: Callable[[], bool] | None = self.main_loop if self.settings.window else None
        self.t_start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.threads = _torch_threads()
        self.stats = run_pipeline(source, self.infer, self.render, live=self.live, stop=self.stop,
                                  monitor=self.monitor, main_loop=main_loop,
                                  streams=1 if self.explainer.sequential else self.settings.streams)
        return self.stats

    def close(self) -> None:
        """Finish the recording, close the sink and the explainer (each whatever the others do)."""
        try:
            if self.recorder is not None:
                self.recorder.close()
        finally:
            try:
                self.sink.close()
            finally:
                self.explainer.close()

    def summary(self, stats: Any = None, interrupted: bool = False) -> dict[str, Any]:
        """The run's figures (what ``--stats-json`` holds); ``stats`` default: what the monitor saw so far."""
        if stats is None:
            stats = stats_of(self.monitor, time.perf_counter() - self.t_start, live=self.live,
                             streams=self.settings.streams)

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
        frames = max(1, out.get("rendered") or 0)
        out.update(clean({
            # every thread of the process (OpenMP, codec threads too), per rendered frame
            "cpu_ms_process_per_frame": (time.process_time() - self.cpu_start) * 1e3 / frames,
            "rss_mb": rss_mb(),
        }))
        out.update(engines=dict(self.engines), startup_s=clean(dict(self.startup)))
        out.update(model=self.settings.model, method=self.state.method, live=self.live,
                   interrupted=interrupted, smooth=self.settings.smooth, size=self.settings.size,
                   threads_per_stream=self.threads or _torch_threads())
        return out
