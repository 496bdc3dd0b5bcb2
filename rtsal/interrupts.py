"""Signals that end a run finish its outputs first (torch-free).

SIGINT (Ctrl-C), SIGTERM (``kill``) and SIGHUP (the terminal or ssh session closed) become
``KeyboardInterrupt`` in the main thread while inside ``with Interrupts()``, so a command can finalise what
it has done (a playable video with every frame so far) and move it into place. Within :meth:`deferred`
(while files are being finished) they are held and reported by ``pending``. The exit code tells them apart:
130 for SIGINT and SIGTERM, 129 for SIGHUP (see :func:`exit_code`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Interrupts", "exit_code", "exit_after_interrupt"]

_exit_after_interrupt = False


def exit_after_interrupt(on: bool = True) -> None:
    """Declare that this process ends once a run is interrupted (the ``rtsal`` command, not a library user):
    then further SIGINT/SIGTERM/SIGHUP after the first are ignored, so five quick Ctrl-Cs still end the
    process with its exit code (130) after the outputs are finished, not with a KeyboardInterrupt traceback
    or a killed-by-signal status."""
    global _exit_after_interrupt
    _exit_after_interrupt = on

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def exit_code(signum: int | None) -> int:
    """The shell's exit status for a run ended by ``signum``: 129 for SIGHUP, else 130."""
    return 129 if signum is not None and signum == getattr(signal, "SIGHUP", None) else 130


class Interrupts:
    """Turn SIGINT/SIGTERM/SIGHUP into ``KeyboardInterrupt`` while inside ``with`` (main thread only).

    ``signum`` records the first signal received, for the exit code. Handlers are installed even when the
    process started with SIGINT ignored (a background job, ``nohup``): a run that was asked to stop stops.
    """

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}
        self._defer = False
        self.pending = False
        self.signum: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self._defer:
            self.pending = True
            return
        raise KeyboardInterrupt

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        ending = self.signum is not None and _exit_after_interrupt
        for s, old in self._old.items():
            signal.signal(s, signal.SIG_IGN if ending else old)
        self._old.clear()

    @property
    def code(self) -> int:
        """130, or 129 when the run was ended by SIGHUP."""
        return exit_code(self.signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals (set ``pending``) while the outputs are finished."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
