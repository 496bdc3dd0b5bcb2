"""The capture -> infer -> render pipeline: three owned threads joined by small channels
(docs/design.md, "Data flow").

``run_pipeline`` iterates ``frames`` in a capture thread, explains them in an infer thread and draws them in a
render thread, in order. Back-pressure matches the source:

- ``live=True`` (camera, stream): a *latest-frame slot* sits between capture and infer. A frame that has not
  been taken when the next one arrives is replaced and counted as dropped, so latency never grows.
- ``live=False`` (files): bounded queues, nothing dropped, every frame inferred and rendered in order; infer
  takes up to ``batch`` frames at a time.

A stop ``Event`` ends every stage; each stage empties its inbox and is joined with a timeout. An exception
raised while iterating ``frames`` ends capture like end-of-stream (what was captured is still inferred and
rendered) and is then re-raised in the caller; an exception in infer or render stops every stage at once and
is re-raised in the caller. The original exception object is re-raised, with ``exc.stage`` set to the stage
name and a note naming it. Ctrl-C in the caller sets stop, drains, joins and re-raises KeyboardInterrupt.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rtsal.telemetry import StageTimer
from rtsal.types import Frame

R = TypeVar("R")

_POLL_S = 0.05  # how often a blocked stage looks at the stop event
STAGES = ("capture", "infer", "render")


class _End:
    """End-of-stream marker passed down the channels."""


_END = _End()


@dataclass(frozen=True)
class PipelineStats:
    """What one run did: frame counts, timing and latency (milliseconds)."""

    captured: int
    processed: int  # frames inferred
    dropped: int  # captured but never inferred (live slot replacements, frames discarded at stop)
    rendered: int
    elapsed_s: float
    fps: float  # rendered / elapsed_s
    stage_ms: dict[str, float]  # median ms per frame of each stage: "capture", "infer", "render"
    latency_ms: dict[str, float]  # capture -> render done: "median", "p95", "max" (ms)
    # (medians and p95 cover the last 4096 frames, see telemetry.StageTimer; max covers the whole run)


class PipelineMonitor:
    """Live counters and per-stage timers of a running pipeline; safe to read from any thread (e.g. a HUD)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.captured = 0
        self.processed = 0
        self.dropped = 0
        self.rendered = 0
        self.timers = {name: StageTimer(name) for name in STAGES}
        self.latency = StageTimer("latency")

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        """``{"captured", "processed", "dropped", "rendered"}`` read together."""
        with self._lock:
            return {"captured": self.captured, "processed": self.processed,
                    "dropped": self.dropped, "rendered": self.rendered}


class LatestSlot:
    """A one-item channel: ``put`` replaces an item not yet taken (and says so); ``close`` ends the stream."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced one that was never taken (a dropped frame)."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float) -> Any:
        """The item, ``_END`` once closed and empty, or ``None`` after ``timeout`` seconds with nothing."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if self._full:
                item, self._item, self._full = self._item, None, False
                return item
            return _END if self._closed else None

    def clear(self) -> int:
        """Discard what is stored; the number of items discarded (0 or 1)."""
        with self._cond:
            had = int(self._full)
            self._item, self._full = None, False
            return had


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put into a bounded queue, giving up (False) once ``stop`` is set."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    """Take from a queue; None once ``stop`` is set and nothing arrived."""
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return None


def _drain(q: queue.Queue) -> list[Any]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def _frames_in(items: Iterable[Any]) -> int:
    n = 0
    for item in items:
        if isinstance(item, Frame):
            n += 1
        elif isinstance(item, list):
            n += sum(isinstance(x, Frame) for x in item)
    return n


class _Run:
    """The state one ``run_pipeline`` call shares between its three threads."""

    def __init__(self, frames: Iterable[Frame], infer: Callable, render: Callable, live: bool, batch: int,
                 queue_size: int, stop: threading.Event, monitor: PipelineMonitor) -> None:
        self.frames = frames
        self.infer = infer
        self.render = render
        self.live = live
        self.batch = 1 if live else batch
        self.stop = stop
        self.monitor = monitor
        self.slot = LatestSlot() if live else None
        self.inbox: queue.Queue = queue.Queue(maxsize=queue_size)  # capture -> infer (files)
        # infer -> render: one result in flight for a live source keeps latency bounded; files get a buffer.
        self.outbox: queue.Queue = queue.Queue(maxsize=1 if live else queue_size)
        self.errors: list[tuple[str, BaseException]] = []
        self._errors_lock = threading.Lock()
        self._finished = 0
        self._finished_cond = threading.Condition()

    def stage(self, body: Callable[[], None]) -> Callable[[], None]:
        """A thread target that runs ``body`` and then counts the stage as finished."""

        def target() -> None:
            try:
                body()
            finally:
                with self._finished_cond:
                    self._finished += 1
                    self._finished_cond.notify_all()

        return target

    def wait_finished(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every stage to finish. Unlike ``Thread.join``, safe to interrupt with
        Ctrl-C: a KeyboardInterrupt inside ``join`` can mark a thread that is still running as stopped."""
        with self._finished_cond:
            return self._finished_cond.wait_for(lambda: self._finished == len(STAGES), timeout)

    def fail(self, stage: str, exc: BaseException, stop_all: bool = True) -> None:
        with self._errors_lock:
            self.errors.append((stage, exc))
        if stop_all:
            self.stop.set()

    # -- capture ---------------------------------------------------------------------------------------------
    def capture(self) -> None:
        m = self.monitor
        timer = m.timers["capture"]
        try:
            it = iter(self.frames)
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    break
                except BaseException as exc:  # a truncated file or a lost camera ends the stream
                    self.fail("capture", exc, stop_all=False)
                    break
                timer.add((time.perf_counter() - t0) * 1e3)
                m.count("captured")
                if self.slot is not None:
                    if self.slot.put(frame):
                        m.count("dropped")
                elif not _put(self.inbox, frame, self.stop):
                    break
        except BaseException as exc:
            self.fail("capture", exc, stop_all=False)
        finally:
            if self.slot is not None:
                self.slot.close()
            else:
                _put(self.inbox, _END, self.stop)
            close = getattr(self.frames, "close", None)
            if callable(close):
                try:
                    close()
                except BaseException as exc:
                    self.fail("capture", exc, stop_all=False)

    # -- infer -----------------------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[list[Frame], bool]:
        """Up to ``batch`` frames and whether the stream has ended (or stop was set)."""
        if self.slot is not None:
            while not self.stop.is_set():
                item = self.slot.get(_POLL_S)
                if item is _END:
                    return [], True
                if item is not None:
                    return [item], False
            return [], True
        batch: list[Frame] = []
        while len(batch) < self.batch:
            item = _get(self.inbox, self.stop)
            if item is None:  # stop
                return batch, True
            if item is _END:
                return batch, True
            batch.append(item)
        return batch, False

    def infer_stage(self) -> None:
        m = self.monitor
        timer = m.timers["infer"]
        try:
            ended = False
            while not ended and not self.stop.is_set():
                batch, ended = self._next_batch()
                if not batch or self.stop.is_set():
                    continue
                t0 = time.perf_counter()
                results = self.infer(batch)
                ms = (time.perf_counter() - t0) * 1e3
                if results is None or len(results) != len(batch):
                    got = "None" if results is None else len(results)
                    raise ValueError(f"infer returned {got} results for {len(batch)} frames")
                for _ in batch:
                    timer.add(ms / len(batch))
                m.count("processed", len(batch))
                for frame, result in zip(batch, results, strict=True):
                    if not _put(self.outbox, (frame, result), self.stop):
                        return
        except BaseException as exc:
            self.fail("infer", exc)
        finally:
            if not self.stop.is_set():
                _put(self.outbox, _END, self.stop)
            self._drain_inbox()

    def _drain_inbox(self) -> None:
        if not self.stop.is_set():
            return
        if self.slot is not None:
            self.slot.clear()
        else:
            _drain(self.inbox)

    # -- render ----------------------------------------------------------------------------------------------
    def render_stage(self) -> None:
        m = self.monitor
        timer = m.timers["render"]
        try:
            while not self.stop.is_set():
                item = _get(self.outbox, self.stop)
                if item is None or item is _END:
                    break
                frame, result = item
                t0 = time.perf_counter()
                keep_going = self.render(frame, result)
                t1 = time.perf_counter()
                timer.add((t1 - t0) * 1e3)
                m.latency.add((t1 - frame.t_capture) * 1e3)
                m.count("rendered")
                if keep_going is False:
                    self.stop.set()
        except BaseException as exc:
            self.fail("render", exc)
        finally:
            if self.stop.is_set():
                _drain(self.outbox)


def _mark(exc: BaseException, stage: str) -> BaseException:
    """Name the stage on the exception itself: ``exc.stage`` and a note."""
    try:
        exc.stage = stage  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    if hasattr(exc, "add_note"):
        exc.add_note(f"(raised in the pipeline's {stage} stage)")
    return exc


def run_pipeline(
    frames: Iterable[Frame],
    infer: Callable[[list[Frame]], Sequence[R]],
    render: Callable[[Frame, R], bool | None],
    *,
    live: bool,
    batch: int = 1,
    queue_size: int = 8,
    stop: threading.Event | None = None,
    monitor: PipelineMonitor | None = None,
    main_loop: Callable[[], bool | None] | None = None,
    join_timeout: float = 10.0,
) -> PipelineStats:
    """Run capture, infer and render on three threads until ``frames`` ends, ``render`` returns False or
    ``stop`` is set; return the counts and timings. See the module docstring for the channel rules.

    ``monitor`` (optional) receives live counters that a render callback can read (dropped frames for a HUD).
    ``main_loop`` (optional) is called over and over in the calling thread while the stages run, and once
    after they end: GUI toolkits want their windows and event loop on the main thread. Returning False
    stops the run; an exception in it stops every stage and is re-raised with the stage name "display".
    ``join_timeout`` bounds the wait for each thread after a stop.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if queue_size < 1:
        raise ValueError(f"queue_size must be at least 1, got {queue_size}")
    stop = stop if stop is not None else threading.Event()
    monitor = monitor if monitor is not None else PipelineMonitor()
    run = _Run(frames, infer, render, live, batch, queue_size, stop, monitor)
    threads = [
        threading.Thread(target=run.stage(run.capture), name="rtsal-capture", daemon=True),
        threading.Thread(target=run.stage(run.infer_stage), name="rtsal-infer", daemon=True),
        threading.Thread(target=run.stage(run.render_stage), name="rtsal-render", daemon=True),
    ]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        if main_loop is None:
            while not run.wait_finished(0.1):  # short waits so that Ctrl-C reaches this thread
                pass
        else:
            _main_loop(run, main_loop)
    except KeyboardInterrupt:
        stop.set()
        _join_all(run, threads, join_timeout)
        raise
    finally:
        stop_needed = not run.wait_finished(0.0)
        if stop_needed:
            stop.set()
        _join_all(run, threads, join_timeout)
        elapsed = time.perf_counter() - t_start
        # Whatever is left in a channel was captured but never inferred (or inferred but never drawn).
        if run.slot is not None:
            run.slot.clear()
        _drain(run.inbox)
        _drain(run.outbox)

    if run.errors:
        stage, exc = _first_error(run.errors)
        for other_stage, other in run.errors:
            if other is not exc and hasattr(exc, "add_note"):
                exc.add_note(f"(also in the {other_stage} stage: {type(other).__name__}: {other})")
        raise _mark(exc, stage)
    return stats_of(monitor, elapsed, live=live)


def _main_loop(run: _Run, main_loop: Callable[[], bool | None]) -> None:
    """Call ``main_loop`` in this thread until every stage has ended, then once more (the last frame)."""
    calling = True
    while True:
        if calling:
            try:
                if main_loop() is False:
                    run.stop.set()
                    calling = False
            except Exception as exc:
                run.fail("display", exc)
                calling = False
        if run.wait_finished(0.005 if calling else 0.1):
            break
    if calling and not run.stop.is_set():
        try:
            main_loop()
        except Exception as exc:
            run.fail("display", exc)


def _first_error(errors: list[tuple[str, BaseException]]) -> tuple[str, BaseException]:
    """The error to re-raise: the first one of infer or render (a bug or a sink failure), else capture's."""
    for stage, exc in errors:
        if stage != "capture":
            return stage, exc
    return errors[0]


def _join_all(run: _Run, threads: list[threading.Thread], timeout: float) -> None:
    """Wait for the stages to finish (interruptible), then for their threads to exit."""
    deadline = time.perf_counter() + timeout
    run.wait_finished(timeout)
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.perf_counter()))
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        warnings.warn(f"pipeline threads still running after {timeout:.0f} s: {', '.join(alive)}",
                      RuntimeWarning, stacklevel=3)


def stats_of(monitor: PipelineMonitor, elapsed_s: float, live: bool = True) -> PipelineStats:
    """Freeze a monitor's counters and timers into ``PipelineStats``.

    A file source drops nothing: frames it read ahead of a stop (``--max-frames``, an error, Ctrl-C) were
    never shown, but not dropped either, so they are not counted as captured."""
    counts = monitor.snapshot()
    captured, processed = counts["captured"], counts["processed"]
    if not live:
        captured = processed
    return PipelineStats(
        captured=captured,
        processed=processed,
        dropped=captured - processed,
        rendered=counts["rendered"],
        elapsed_s=elapsed_s,
        fps=counts["rendered"] / elapsed_s if elapsed_s > 0 else 0.0,
        stage_ms={name: monitor.timers[name].median() for name in STAGES},
        latency_ms=monitor.latency.summary(),
    )
