"""Dask worker plugins for rtsal batch (imports ``distributed``: loaded only when Dask is installed)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["IgnoreSigint"]


class IgnoreSigint(WorkerPlugin):
    """Local workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and the client
    decides what a Ctrl-C does (stop submitting, let running files finish). Without it a worker dies on
    Ctrl-C and takes its file with it. Registered on local clusters only: workers of a cluster someone
    else started keep their own Ctrl-C."""

    name = "rtsal-ignore-sigint"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
