"""What a backend's build takes from the :class:`~rtsal.engine.backends.served.ServedBackend` that runs it."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from rtsal.locks import SharedExclusiveLock

__all__ = ["BuildContext"]


class BuildContext:
    """What a backend's build may take from the :class:`ServedBackend` that runs it (backends whose class
    says ``takes_build_context``): whether the build runs in the background, the lock that an in-process
    ``torch.export`` holds alone (the Explainer's eager calls share it), and the child processes it starts,
    which :meth:`close` leaves to finish, detached, or stops."""

    def __init__(self, background: bool = False, exclusive: SharedExclusiveLock | None = None) -> None:
        self.background = background
        self.exclusive = exclusive or SharedExclusiveLock()
        self.procs: list[subprocess.Popen] = []
        self.detached: list[subprocess.Popen] = []  # child builds left running by close()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, argv: list[str], **popen: Any) -> subprocess.Popen | None:
        """Start a child build (``subprocess.Popen(argv, **popen)``); None once closed."""
        with self._lock:
            if self._closed:
                return None
            proc = subprocess.Popen(argv, **popen)
            self.procs.append(proc)
            return proc

    def close(self, detach: bool = True) -> list[subprocess.Popen]:
        """No more children; those still running are left to finish (one line on stderr each) or stopped
        (``detach=False``). Returns them."""
        with self._lock:
            self._closed = True
            running = [p for p in self.procs if p.poll() is None]
        for p in running:
            if detach:
                self.detached.append(p)
                print(f"rtsal: the compiled graph is still building (process {p.pid}); it finishes in the "
                      f"background and the next run at this input size starts compiled", file=sys.stderr)
            else:
                _stop(p)
        return running


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a child build and reap it (it removes its temporary file on SIGTERM)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
