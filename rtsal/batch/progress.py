"""Two progress bars for a batch, files and frames (tqdm, with rate and ETA), or one log line per file.

Bars show on a terminal when tqdm is installed; otherwise (logs, pipes, ``--quiet`` off) each finished file
is one line on stdout; with ``quiet`` nothing is printed until the report.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["BatchProgress"]


class BatchProgress:
    """``files`` and ``frames`` bars; :meth:`file_done` advances both (context manager)."""

    def __init__(
        self, files: int, frames: int | None, *, quiet: bool = False, bars: bool | None = None
    ) -> None:
        self.quiet = quiet
        self.files_total = files
        self.count = 0
        self._seen: dict[str, int] = {}  # input -> frames counted on the frames bar
        self._lock = threading.Lock()
        self._bars: list[Any] = []
        if bars is None:
            bars = not quiet and sys.stderr.isatty()
        if bars:
            try:
                from tqdm import tqdm
            except ImportError:
                bars = False
            else:
                self._files = tqdm(total=files, unit="file", desc="files", position=0, dynamic_ncols=True)
                self._frames = tqdm(
                    total=frames or None, unit="frame", desc="frames", position=1, dynamic_ncols=True
                )
                self._bars = [self._files, self._frames]
        self.bars = bool(bars)

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def note(self, text: str) -> None:
        """A line that does not break the bars."""
        if self.bars:
            self._files.write(text, file=sys.stderr)
        elif not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def frames(self, input: str, frames: int) -> None:
        """``frames`` of ``input`` explained so far (a worker's progress event; any thread). A file run
        again after its worker died counts only past what it reached before."""
        with self._lock:
            delta = frames - self._seen.get(input, 0)
            if delta > 0:
                self._seen[input] = frames
                if self.bars:
                    self._frames.update(delta)

    def file_done(self, rec: dict[str, Any], rel: str) -> None:
        self.count += 1
        self.frames(str(rec.get("input")), int(rec.get("frames") or 0))
        if self.bars:
            self._files.update(1)
            if rec.get("status") == "failed":
                self._files.write(f"failed: {rel}: {rec.get('error')}", file=sys.stderr)
            return
        if self.quiet:
            return
        status = rec.get("status")
        tail = f"{rec.get('frames', 0)} frames, {rec.get('fps', 0.0):.1f} frames/s"
        if status == "failed":
            tail = str(rec.get("error"))
        print(f"[{self.count}/{self.files_total}] {status}: {rel}: {tail}", flush=True)

    def close(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []
