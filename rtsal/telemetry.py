"""Honest timers: per-stage samples with median and spread, and a rolling frames-per-second meter.

Clocks are ``time.perf_counter``; samples are milliseconds. Both keep a bounded window so that a run of any
length holds a fixed amount of memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    data = sorted(values)
    if not data:
        return float("nan")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within 0..100, got {q}")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class StageTimer:
    """Milliseconds per call of one stage: the last ``window`` samples, plus the count and max of all."""

    def __init__(self, name: str, window: int = 4096) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.name = name
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0
        self.max = float("nan")

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(ms)
            self.count += 1
            self.max = ms if self.count == 1 else max(self.max, ms)

    def time(self) -> _Timing:
        """``with timer.time(): ...`` adds the block's duration."""
        return _Timing(self)

    def samples(self) -> list[float]:
        with self._lock:
            return list(self._samples)

    @property
    def last(self) -> float:
        with self._lock:
            return self._samples[-1] if self._samples else float("nan")

    def median(self) -> float:
        return percentile(self.samples(), 50.0)

    def p95(self) -> float:
        return percentile(self.samples(), 95.0)

    def summary(self) -> dict[str, float]:
        """``{"median", "p95", "max"}`` in ms (NaN when empty)."""
        data = self.samples()
        with self._lock:
            top = self.max
        return {"median": percentile(data, 50.0), "p95": percentile(data, 95.0), "max": top}


class _Timing:
    def __init__(self, timer: StageTimer) -> None:
        self.timer = timer
        self.t0 = 0.0

    def __enter__(self) -> _Timing:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.add((time.perf_counter() - self.t0) * 1e3)


class FpsMeter:
    """Rolling events per second over the last ``window_s`` seconds (and at most ``max_events`` events)."""

    def __init__(self, window_s: float = 2.0, max_events: int = 1000) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=max_events)
        self._lock = threading.Lock()

    def tick(self, t: float | None = None) -> None:
        """Record one event at ``t`` (default: now)."""
        t = time.perf_counter() if t is None else t
        with self._lock:
            self._times.append(t)
            self._trim(t)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def fps(self, now: float | None = None) -> float:
        """Events per second over the window; 0.0 until two events have been seen."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0


class CpuStages:
    """CPU time per frame of named stages (``time.thread_time``: the calling thread only, so work that a
    stage hands to other threads, e.g. OpenMP or codec threads, is not in it). Thread-safe; totals, not a
    window, so a 10,000-frame run holds a few numbers.

        with cpu.measure("render"):
            ...
        cpu.per_frame()  # {"render": 2.1, ...} mean CPU ms per frame
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms: dict[str, float] = {}
        self._frames: dict[str, int] = {}

    def add(self, name: str, ms: float, frames: int = 1) -> None:
        """Add ``ms`` of CPU spent on ``frames`` frames in stage ``name``."""
        with self._lock:
            self._ms[name] = self._ms.get(name, 0.0) + ms
            self._frames[name] = self._frames.get(name, 0) + frames

    def measure(self, name: str, frames: int = 1) -> _CpuTiming:
        """``with cpu.measure(name): ...`` adds the block's CPU time of this thread."""
        return _CpuTiming(self, name, frames)

    def per_frame(self) -> dict[str, float]:
        """Mean CPU ms per frame of each stage measured so far."""
        with self._lock:
            return {k: self._ms[k] / max(1, self._frames[k]) for k in self._ms}


class _CpuTiming:
    def __init__(self, cpu: CpuStages, name: str, frames: int) -> None:
        self.cpu, self.name, self.frames = cpu, name, frames
        self.t0 = 0.0

    def __enter__(self) -> _CpuTiming:
        self.t0 = time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu.add(self.name, (time.thread_time() - self.t0) * 1e3, self.frames)


def rss_mb() -> float:
    """Resident memory of this process now (MB): Linux ``/proc``, else the peak from ``getrusage``."""
    import os
    import sys

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


_IMPORTED = time.time()  # the fallback launch time: when rtsal's telemetry was first imported


def seconds_since_launch() -> float:
    """Seconds since this process started: Linux ``/proc`` (interpreter start-up included), else since rtsal
    was imported (a few tens of milliseconds later)."""
    import os

    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time() - _IMPORTED
