"""Where the files run: a local Dask cluster, an existing one, or this process when Dask is missing.

:class:`BatchCluster` is a context manager that owns the Dask ``LocalCluster`` (worker processes bound to
127.0.0.1, each behind a nanny that replaces it if it dies) or the ``Client`` of an existing scheduler, and
closes them on exit. It hands out an executor with the same small interface in all three modes
(:class:`DaskExecutor`, :class:`InProcessExecutor`): ``submit(task)``, ``next_done()``, ``in_flight`` and
``abandon()``.

Faults. A file whose worker process dies (killed, out of memory) is run again on another worker by the
Dask scheduler; on a local cluster it is tried at most ``1 + RETRIES_ON_DEATH`` times (the scheduler's
``allowed-failures``), then recorded as failed. An exception escaping the task (which reports file errors
as results, so this means a broken worker environment) is retried ``RETRIES_ON_ERROR`` time(s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtsal.errors import RtsalError, UsageError

__all__ = [
    "RETRIES_ON_DEATH",
    "RETRIES_ON_ERROR",
    "BatchCluster",
    "ClusterChoice",
    "DaskExecutor",
    "InProcessExecutor",
    "default_workers",
    "dask_available",
]

RETRIES_ON_DEATH = 2
RETRIES_ON_ERROR = 1
INSTALL_HINT = 'pip install "rtsal[dask]"'


def dask_available() -> bool:
    """Whether ``dask.distributed`` can be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ClusterChoice:
    """Workers, threads per worker and torch threads per engine for a local cluster."""

    workers: int
    threads_per_worker: int
    torch_threads: int


def default_workers(
    workers: int | None, threads_per_worker: int | None, torch_threads: int | None, cores: int | None = None
) -> ClusterChoice:
    """Fill what the user left out from the core count: one worker per two cores (each file's decoding and
    encoding take a core beside the model's), one file at a time per worker, and the cores shared evenly
    among the engines."""
    cores = cores or os.cpu_count() or 1
    tpw = threads_per_worker or 1
    n = workers or max(1, cores // 2)
    torch_n = torch_threads or max(1, cores // (n * tpw))
    return ClusterChoice(n, tpw, torch_n)


class InProcessExecutor:
    """Runs each task in this process, in submission order, when :meth:`next_done` asks for a result."""

    mode = "in-process"

    def __init__(self, fn: Callable[..., dict[str, Any]], *extra: Any) -> None:
        self._fn = fn
        self._extra = extra
        self._queue: list[tuple[Any, Any]] = []

    @property
    def slots(self) -> int:
        return 1

    @property
    def in_flight(self) -> list[Any]:
        return [key for key, _ in self._queue]

    def submit(self, key: Any, task: Any) -> None:
        self._queue.append((key, task))

    def next_done(self) -> tuple[Any, dict[str, Any]]:
        key, task = self._queue[0]
        result = self._fn(task, *self._extra)  # Ctrl-C propagates; the task is then abandoned
        self._queue.pop(0)
        return key, result

    def abandon(self) -> None:
        self._queue.clear()
        from rtsal.batch.worker import close_engines

        close_engines()

    def close(self) -> None:
        from rtsal.batch.worker import close_engines

        close_engines()


class DaskExecutor:
    """Submits tasks to a Dask client and hands back results in completion order."""

    mode = "dask"

    def __init__(
        self, client: Any, fn: Callable[..., dict[str, Any]], *extra: Any, tries: int | None = None
    ) -> None:
        from distributed import as_completed

        self._tries = tries  # how often a file may kill its worker (None: the scheduler's own setting)
        self._client = client
        self._fn = fn
        self._extra = list(extra)
        self._done = as_completed()
        self._futures: dict[Any, Any] = {}  # future -> key

    @property
    def slots(self) -> int:
        """Files that can run at once: the cluster's worker threads now (at least 1)."""
        try:
            return max(1, sum(self._client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a scheduler that does not answer: keep going with one
            return 1

    @property
    def in_flight(self) -> list[Any]:
        return list(self._futures.values())

    def submit(self, key: Any, task: Any) -> None:
        future = self._client.submit(
            self._fn, task, *self._extra, key=f"rtsal-batch-{key}", pure=False, retries=RETRIES_ON_ERROR
        )
        self._futures[future] = key
        self._done.add(future)

    def next_done(self) -> tuple[Any, dict[str, Any]]:
        future = next(self._done)
        key = self._futures.pop(future)
        try:
            return key, future.result()
        except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost scheduler: the file failed
            name = type(exc).__name__
            if name == "KilledWorker":
                times = f"{self._tries} times" if self._tries else "each time it ran it"
                why = f"its worker died {times} (killed or out of memory)"
            else:
                why = f"{name}: {' '.join(str(exc).split())}"
            return key, {"status": "failed", "error": why}
        finally:
            future.release()

    def abandon(self) -> None:
        """Cancel every file not finished (workers of an existing cluster may still finish one: its complete
        output then lands unrecorded, and a resumed run redoes it)."""
        futures = list(self._futures)
        self._futures.clear()
        self._done.clear()
        if futures:
            try:
                self._client.cancel(futures, force=True)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass

    def close(self) -> None:
        pass


class BatchCluster:
    """Context manager owning the Dask cluster or client (or nothing, in-process).

    Args:
        workers, threads_per_worker, torch_threads: the local cluster (None: from the core count).
        scheduler: address of an existing scheduler (``tcp://host:8786``); then no local cluster starts.
        log: where one-line notes go (the choice made, the dashboard address, the fallback).
    """

    def __init__(
        self,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        torch_threads: int | None = None,
        scheduler: str | None = None,
        log: Callable[[str], None] = print,
        timeout: float = 30.0,
    ) -> None:
        self.choice = default_workers(workers, threads_per_worker, torch_threads)
        self.scheduler = scheduler
        self.log = log
        self.timeout = timeout
        self.cluster: Any = None
        self.client: Any = None
        self.mode = "in-process"
        self.dashboard: str | None = None

    def __enter__(self) -> BatchCluster:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if not dask_available():
            if self.scheduler:
                raise UsageError(f"--scheduler needs Dask, which is not installed: {INSTALL_HINT}")
            self.log(
                f"Dask is not installed: running in this process, one file at a time ({INSTALL_HINT} "
                "for parallel workers and clusters)"
            )
            return
        import dask
        from distributed import Client, LocalCluster

        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=self.timeout)
            except (OSError, TimeoutError) as exc:
                raise RtsalError(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
            self.mode = "scheduler"
            workers = self.client.nthreads()
            self.log(
                f"Dask scheduler {self.scheduler}: {len(workers)} worker(s), "
                f"{sum(workers.values())} thread(s)"
            )
        else:
            c = self.choice
            dashboard = "127.0.0.1:0" if importlib.util.find_spec("bokeh") else None
            with dask.config.set({"distributed.scheduler.allowed-failures": RETRIES_ON_DEATH}):
                self.cluster = LocalCluster(
                    n_workers=c.workers,
                    threads_per_worker=c.threads_per_worker,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=dashboard,
                    silence_logs=logging.CRITICAL,
                )
                self.client = Client(self.cluster, timeout=self.timeout)
            from rtsal.batch.plugins import IgnoreSigint

            self.client.register_plugin(IgnoreSigint())
            self.mode = "local"
            self.log(
                f"local Dask cluster: {c.workers} worker process(es) x {c.threads_per_worker} thread(s), "
                f"{c.torch_threads} torch thread(s) each (--workers, --threads-per-worker, --threads)"
            )
            if dashboard is None:
                self.log("Dask dashboard: not available (pip install bokeh)")
        if self.mode == "scheduler" or self.cluster is not None:
            link = getattr(self.client, "dashboard_link", None)
            if link and (self.mode == "scheduler" or importlib.util.find_spec("bokeh")):
                self.dashboard = link
                self.log(f"Dask dashboard: {link}")

    def executor(self, fn: Callable[..., dict[str, Any]], *extra: Any) -> DaskExecutor | InProcessExecutor:
        """An executor running ``fn(task, *extra)`` for each submitted task."""
        if self.client is None:
            return InProcessExecutor(fn, *extra)
        tries = 1 + RETRIES_ON_DEATH if self.mode == "local" else None
        return DaskExecutor(self.client, fn, *extra, tries=tries)

    def close(self) -> None:
        """Close the client and, for a local cluster, stop its workers (running files are abandoned)."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        for obj in (client, cluster):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing must not hide the run's result
                    pass
