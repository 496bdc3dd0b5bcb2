"""A one-line terminal progress bar with a rate (items/s) and an ETA; silent when not on a terminal."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import deque
from typing import TextIO


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` or ``M:SS``; ``?`` for an unknown or infinite time."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``done/total  pct  [bar]  rate unit/s  ETA m:ss`` redrawn in place on ``stream`` (default stderr).

    Enabled only when ``stream`` is a terminal (pass ``enabled`` to force it either way), so logs, pipes and
    tests see nothing. The rate is measured over the last ``window`` seconds; redraws are at most every
    ``interval`` seconds. ``total`` may be None (unknown length) or an estimate: the bar never runs past it.
    Thread-safe; use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        total: int | None,
        unit: str = "frames",
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.25,
        window: float = 3.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.interval = interval
        self.window = window
        self.done = 0
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._last_draw = 0.0
        self._marks: deque[tuple[float, int]] = deque([(self._t0, 0)])
        self._closed = False
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rate(self, now: float | None = None) -> float:
        """Items per second over the last ``window`` seconds (over the whole run until then)."""
        now = time.perf_counter() if now is None else now
        t_old, n_old = self._marks[0]
        dt = now - t_old
        return (self.done - n_old) / dt if dt > 0 else 0.0

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done and redraw when it is time."""
        with self._lock:
            self.done += n
            now = time.perf_counter()
            self._marks.append((now, self.done))
            while len(self._marks) > 2 and now - self._marks[1][0] >= self.window:
                self._marks.popleft()
            if self.enabled and not self._closed and now - self._last_draw >= self.interval:
                self._last_draw = now
                self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the bar as it would be drawn now."""
        now = time.perf_counter() if now is None else now
        rate = self.rate(now)
        rate_txt = f"{rate:.1f} {self.unit}/s"
        if self.total is None:
            return f"{self.done} {self.unit}  {rate_txt}  elapsed {format_duration(now - self._t0)}"
        total = max(self.total, self.done)
        frac = self.done / total
        eta = (total - self.done) / rate if rate > 0 else float("nan")
        head = f"{self.done}/{total} {self.unit} {frac:4.0%}"
        tail = f"{rate_txt}  ETA {format_duration(eta)}"
        cols = shutil.get_terminal_size((80, 24)).columns
        bar_w = max(0, min(40, cols - len(head) - len(tail) - 8))
        if bar_w >= 5:
            filled = int(round(frac * bar_w))
            return f"{head} [{'#' * filled}{'.' * (bar_w - filled)}] {tail}"
        return f"{head}  {tail}"

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        try:
            self.stream.write(f"\r{text}{pad}")
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not stop the work
            self.enabled = False

    def close(self) -> None:
        """Draw the final state and end the line (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.enabled and self.done:
                self._draw(time.perf_counter())
                try:
                    self.stream.write("\n")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
