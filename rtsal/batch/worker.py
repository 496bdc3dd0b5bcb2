"""The task of one file: explain it with this worker's engine into atomic outputs, return what happened.

Runs inside a Dask worker process (or the client process when Dask is missing). Each worker thread builds
its engine once per settings and reuses it for every file it gets (:func:`engine_for`); a file that cannot
be read fails with its one-line reason and never raises, so Dask's own retries are left for dead workers.
The file runs through the frame layer's :class:`rtsal.frame.video_job.VideoJob` (the ``rtsal video``
pipeline: every frame, audio kept), writing into temporary files beside the final paths
(:class:`rtsal.outputs.AtomicPath`); they are moved into place only when the whole file succeeded, so a
failed or abandoned file leaves its final paths as they were. The SHA-256 of each output is taken here,
on the worker, where the bytes are.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtsal.errors import RtsalError
from rtsal.frame.video_job import VideoJob, VideoSettings
from rtsal.outputs import AtomicPath, sha256_file

__all__ = [
    "PROGRESS_TOPIC",
    "Engine",
    "EngineBuilder",
    "FileTask",
    "close_engines",
    "engine_for",
    "run_file",
]

PROGRESS_TOPIC = "rtsal-batch-frames"  # Dask event topic: {"input": path, "frames": explained so far}
PROGRESS_INTERVAL = 0.5  # seconds between two progress events of one file


@dataclass(frozen=True)
class Engine:
    """A :class:`rtsal.frame.infer.FrameExplainer` (owns its runner) and the SHA-256 of its weights."""

    explainer: Any
    weights_sha256: str


EngineBuilder = Callable[[dict[str, Any]], Engine]
"""``build(engine_settings) -> Engine``: picklable (a module-level function), run once per worker thread."""


@dataclass(frozen=True)
class FileTask:
    """One input file, its final outputs (``kind -> path``: video, csv, maps) and the run's settings."""

    input: str
    outputs: dict[str, str]
    engine: dict[str, Any]
    video: VideoSettings
    settings_sha256: str
    rel: dict[str, str] = field(default_factory=dict)  # kind -> path relative to OUTDIR, for the manifest


_local = threading.local()


def worker_id() -> str:
    """``host:pid`` of this process: a replaced worker has a new one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def engine_for(build: EngineBuilder, settings: dict[str, Any], key: str) -> tuple[Engine, float]:
    """This thread's engine for ``key`` (built on first use) and the seconds it took to build (0 if cached).

    One engine per thread: the engine's hooks hold the activations of the batch in flight, so two threads
    must not share one. An engine for other settings is closed first.
    """
    cache: dict[str, Engine] = getattr(_local, "engines", None) or {}
    _local.engines = cache
    if key in cache:
        return cache[key], 0.0
    close_engines()
    t0 = time.perf_counter()
    engine = build(settings)
    cache[key] = engine
    return engine, time.perf_counter() - t0


def close_engines() -> None:
    """Close this thread's engines (the in-process mode calls it at the end; workers exit instead)."""
    cache: dict[str, Engine] = getattr(_local, "engines", None) or {}
    while cache:
        _, engine = cache.popitem()
        try:
            engine.explainer.close()
        except Exception:  # noqa: BLE001 - closing must not hide the run's result
            pass


ProgressCallback = Callable[[str, int], None]


def _dask_progress() -> ProgressCallback:
    """A callback sending the frames explained so far to the client as a Dask event (any thread: the worker
    is found here, in the task's thread); it does nothing outside a Dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # no Dask, or not inside a worker
        return lambda input, frames: None

    def send(input: str, frames: int) -> None:
        worker.log_event(PROGRESS_TOPIC, {"input": input, "frames": frames})  # thread-safe

    return send


class _Counting:
    """The engine's explainer as the pipeline's infer stage, reporting the frames explained so far
    (at most every ``PROGRESS_INTERVAL`` seconds) for the client's frames bar."""

    def __init__(self, explainer: Any, input: str, report: ProgressCallback) -> None:
        self._explainer = explainer
        self._input = input
        self._report = report
        self._frames = 0
        self._last = time.monotonic()

    @property
    def class_names(self) -> Any:
        return self._explainer.class_names

    @property
    def sequential(self) -> bool:
        return self._explainer.sequential

    def reset(self) -> None:
        self._explainer.reset()

    def __call__(self, frames: Any) -> Any:
        out = self._explainer(frames)
        self._frames += len(frames)
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._report(self._input, self._frames)
        return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, RtsalError) else f"{type(exc).__name__}: {text}"


def run_file(
    task: FileTask, build: EngineBuilder, progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Explain ``task.input`` into its outputs; a result dict for the manifest (never raises an Exception).

    ``status`` is ``done`` (every output complete and in place) or ``failed`` (with ``error``; no final path
    was touched). KeyboardInterrupt (the in-process mode's Ctrl-C, :class:`rtsal.errors.Interrupted`)
    discards the temporaries and propagates. ``seconds`` do not count building the engine.
    """
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "input": task.input,
        "status": "failed",
        "frames": 0,
        "seconds": 0.0,
        "fps": 0.0,
        "error": None,
        "outputs": dict(task.rel),
        "sha256": {},
        "worker": worker_id(),
        "engine_seconds": 0.0,
        "weights_sha256": None,
    }
    temps: dict[str, AtomicPath] = {}
    try:
        engine, built = engine_for(build, task.engine, task.settings_sha256)
        result["engine_seconds"] = round(built, 3)
        result["weights_sha256"] = engine.weights_sha256
        for kind, final in task.outputs.items():
            Path(final).parent.mkdir(parents=True, exist_ok=True)
            temps[kind] = AtomicPath(final)
        t1 = time.perf_counter()
        tmp = {k: a.tmp for k, a in temps.items()}
        meta = {"model": task.engine.get("model"), "method": task.engine.get("method")}
        with VideoJob(
            task.input, tmp["video"], task.video, maps=tmp.get("maps"), csv_path=tmp.get("csv"), meta=meta,
            report=tmp.get("report"),
        ) as job:
            counting = _Counting(engine.explainer, task.input, progress or _dask_progress())
            frames = job.run(counting, batch=getattr(engine.explainer, "stride", None)).frames
        if job.review_summary is not None:
            result["review"] = job.review_summary
        seconds = time.perf_counter() - t1
        hashes = {kind: sha256_file(a.tmp) for kind, a in temps.items()}
        for a in temps.values():
            a.commit()
        result.update(
            status="done",
            frames=frames,
            seconds=round(seconds, 3),
            fps=round(frames / seconds, 2) if seconds > 0 else 0.0,
            sha256=hashes,
        )
    except Exception as exc:  # noqa: BLE001 - one file's failure is recorded; the batch goes on
        result["error"] = _one_line(exc)
        result["seconds"] = round(time.perf_counter() - t0 - result["engine_seconds"], 3)
    finally:
        for a in temps.values():
            a.discard()
    return result
