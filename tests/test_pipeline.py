"""The capture -> infer -> render pipeline, real threads: accounting, order, back-pressure, errors, stop."""

from __future__ import annotations

import _thread
import statistics
import threading
import time

import numpy as np
import pytest

from rtsal.pipeline import LatestSlot, PipelineMonitor, run_pipeline
from rtsal.telemetry import FpsMeter, StageTimer, percentile
from rtsal.types import Frame


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rtsal-")]


class Source:
    """An injected frame source that records whether it was closed, and can fail after ``fail_at`` frames."""

    def __init__(self, n: int, period: float = 0.0, fail_at: int | None = None, size=(8, 8)) -> None:
        self.n, self.period, self.fail_at, self.size = n, period, fail_at, size
        self.closed = False
        self.yielded = 0

    def __iter__(self):
        for i in range(self.n):
            if self.fail_at is not None and i == self.fail_at:
                raise OSError(f"truncated at frame {i}")
            if self.period:
                time.sleep(self.period)
            image = np.full((*self.size, 3), i % 256, np.uint8)
            self.yielded += 1
            yield Frame(i, i / 30.0, time.perf_counter(), image)

    def close(self) -> None:
        self.closed = True


def index_infer(frames):
    return [f.index for f in frames]


@pytest.mark.parametrize("batch", [1, 4])
def test_file_mode_every_frame_in_order(batch):
    seen, batches = [], []

    def infer(frames):
        batches.append(len(frames))
        return [(f.index, int(f.image[0, 0, 0])) for f in frames]

    src = Source(53)
    stats = run_pipeline(src, infer, lambda f, r: seen.append((f.index, r)), live=False, batch=batch,
                         queue_size=3)
    assert [i for i, _ in seen] == list(range(53))
    assert all(r == (i, i % 256) for i, r in seen)  # each result belongs to its own frame
    assert max(batches) == batch and sum(batches) == 53
    assert (stats.captured, stats.processed, stats.dropped, stats.rendered) == (53, 53, 0, 53)
    assert src.closed and not pipeline_threads()
    assert set(stats.stage_ms) == {"capture", "infer", "render"}
    assert stats.latency_ms["median"] <= stats.latency_ms["p95"] <= stats.latency_ms["max"]
    assert stats.fps == pytest.approx(53 / stats.elapsed_s)


def test_live_slow_infer_drops_and_stays_fresh():
    """A model slower than the source: frames are dropped and each inferred frame is (nearly) the newest."""
    monitor = PipelineMonitor()
    lags = []

    def slow(frames):
        lags.append(monitor.captured - 1 - frames[0].index)  # frames captured after this one, before infer
        time.sleep(0.02)
        return index_infer(frames)

    seen = []
    src = Source(150, period=0.002)
    stats = run_pipeline(src, slow, lambda f, r: seen.append(r), live=True, monitor=monitor)
    assert stats.dropped > 0
    assert stats.processed + stats.dropped == stats.captured == 150
    assert stats.rendered == stats.processed == len(seen)
    assert seen == sorted(seen) and seen[-1] == 149  # in order, and the last frame is never lost
    # A FIFO would fall behind by ~one frame per 2 ms of model time; the slot keeps the lag at 0-1 frames.
    assert statistics.median(lags) <= 1
    assert max(lags) <= 10 < 150 - len(seen)


def test_file_mode_slow_infer_drops_nothing():
    def slow(frames):
        time.sleep(0.01)
        return index_infer(frames)

    seen = []
    src = Source(40, period=0.001)
    stats = run_pipeline(src, slow, lambda f, r: seen.append(r), live=False, queue_size=2)
    assert seen == list(range(40))
    assert stats.dropped == 0 and stats.processed == stats.captured == 40


def test_capture_error_ends_stream_then_reraises():
    """A truncated file: the frames read before the error are still inferred and rendered, then raised."""
    seen = []
    src = Source(100, fail_at=17)
    with pytest.raises(OSError, match="truncated at frame 17") as info:
        run_pipeline(src, index_infer, lambda f, r: seen.append(r), live=False, batch=4)
    assert info.value.stage == "capture"
    assert any("capture" in note for note in info.value.__notes__)
    assert seen == list(range(17))
    assert src.closed and not pipeline_threads()


@pytest.mark.parametrize("stage", ["infer", "render"])
@pytest.mark.parametrize("live", [False, True])
def test_stage_error_reaches_caller_and_stops_everything(stage, live):
    class Boom(RuntimeError):
        pass

    def infer(frames):
        if stage == "infer" and frames[0].index >= 5:
            raise Boom("infer failed")
        return index_infer(frames)

    def render(frame, result):
        if stage == "render" and frame.index >= 5:
            raise Boom("render failed")

    src = Source(10_000, period=0.001)
    with pytest.raises(Boom) as info:
        run_pipeline(src, infer, render, live=live)
    assert info.value.stage == stage
    assert src.closed and src.yielded < 10_000
    assert not pipeline_threads()


def test_infer_must_return_one_result_per_frame():
    with pytest.raises(ValueError, match="2 results for 1 frames") as info:
        run_pipeline(Source(5), lambda fs: [0, 0], lambda f, r: None, live=False)
    assert info.value.stage == "infer"
    assert not pipeline_threads()


def test_render_false_stops_and_closes():
    seen = []

    def render(frame, result):
        seen.append(result)
        return len(seen) < 7

    src = Source(10_000)
    stats = run_pipeline(src, index_infer, render, live=False)
    assert seen == list(range(7)) and stats.rendered == 7
    assert src.closed and src.yielded < 10_000
    assert stats.processed + stats.dropped == stats.captured
    assert not pipeline_threads()


def test_external_stop_event():
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    src = Source(1_000_000, period=0.001)
    stats = run_pipeline(src, index_infer, lambda f, r: None, live=True, stop=stop)
    timer.join()
    assert 0 < stats.captured < 1_000_000 and src.closed
    assert not pipeline_threads()


def test_keyboard_interrupt_in_caller_stops_drains_and_reraises(python_sigint):
    def render(frame, result):
        if frame.index == 20:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the waiting caller

    src = Source(1_000_000, period=0.001)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(src, index_infer, render, live=False)
    assert src.closed and src.yielded < 1_000_000
    assert not pipeline_threads()


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch"):
        run_pipeline([], index_infer, lambda f, r: None, live=False, batch=0)
    with pytest.raises(ValueError, match="queue_size"):
        run_pipeline([], index_infer, lambda f, r: None, live=False, queue_size=0)


def test_empty_source():
    stats = run_pipeline(iter(()), index_infer, lambda f, r: None, live=True)
    assert (stats.captured, stats.processed, stats.rendered, stats.dropped) == (0, 0, 0, 0)


def test_latest_slot_replaces_and_closes():
    slot = LatestSlot()
    assert slot.get(0.0) is None
    assert slot.put(1) is False and slot.put(2) is True  # 1 was never taken: dropped
    assert slot.get(0.0) == 2
    slot.put(3)
    slot.close()
    assert slot.get(0.0) == 3  # what was stored before the close is still delivered
    assert slot.get(0.0) is not None and slot.get(0.0) != 3  # then end-of-stream


def test_telemetry():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 100) == 5.0
    timer = StageTimer("x", window=3)
    for v in (10.0, 1.0, 2.0, 3.0):
        timer.add(v)
    assert timer.count == 4 and timer.max == 10.0 and timer.median() == 2.0  # window keeps the last 3
    meter = FpsMeter(window_s=1.0)
    for k in range(11):
        meter.tick(100.0 + k * 0.05)  # 20 events/s
    assert meter.fps(now=100.5) == pytest.approx(20.0)
    assert meter.fps(now=105.0) == 0.0  # the window has emptied


def test_main_loop_runs_in_caller_and_can_stop():
    caller = threading.get_ident()
    calls = []

    def main_loop():
        calls.append(threading.get_ident())
        return len(calls) < 5

    src = Source(1_000_000, period=0.001)
    run_pipeline(src, index_infer, lambda f, r: None, live=True, main_loop=main_loop)
    assert len(calls) == 5 and set(calls) == {caller}
    assert src.closed and not pipeline_threads()


def test_main_loop_error_is_raised_as_display_stage():
    def main_loop():
        raise LookupError("window gone")

    with pytest.raises(LookupError) as info:
        run_pipeline(Source(1_000_000, period=0.001), index_infer, lambda f, r: None, live=True,
                     main_loop=main_loop)
    assert info.value.stage == "display"
    assert not pipeline_threads()
