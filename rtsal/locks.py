"""A readers-writer lock (torch-free): many threads share a resource, or one holds it alone.

Used where a model is shared: the engine's eager forward passes share the model while an in-process
``torch.export`` trace holds it alone (:class:`rtsal.engine.backends.served.ServedBackend`), and the frame
layer's engine-method calls share it while a comparison method owns it
(:class:`rtsal.frame.infer.FrameExplainer`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["SharedExclusiveLock"]


class SharedExclusiveLock:
    """Any number of shared holders, or one exclusive holder. Writers first: once an exclusive holder waits,
    new shared holders wait behind it, so a stream of shared calls cannot starve it. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @contextmanager
    def hold(self, exclusive: bool = False) -> Iterator[None]:
        """``with lock.hold():`` shared; ``with lock.hold(exclusive=True):`` alone."""
        with self._cond:
            if exclusive:
                self._waiting_exclusive += 1
                try:
                    self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
                finally:
                    self._waiting_exclusive -= 1
                self._exclusive = True
            else:
                self._cond.wait_for(lambda: not self._exclusive and self._waiting_exclusive == 0)
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._cond.notify_all()

    @property
    def shared_holders(self) -> int:
        """How many shared holders are inside now (tests)."""
        with self._cond:
            return self._shared
