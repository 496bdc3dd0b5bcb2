"""How many inference streams, and how many torch threads each: the ``--streams auto|N`` / ``--threads N``
rule, and the OpenMP setting of the command line. Torch-free at import.

An *inference stream* is one infer thread of :func:`rtsal.pipeline.run_pipeline` running the model on its
own frames (the idea behind OpenVINO's throughput streams). Streams are threads in one process, not worker
processes: they share the one model and its hooks (activations are recorded per thread), hotkey method
switches reach every stream at once, and frames and results cross no process boundary (a 640x480 frame is
900 kB; a 720p one 2.7 MB). The forward pass releases the GIL inside every operator, so N 1-thread streams
keep N cores busy. ``torch.set_num_threads`` is process-wide, but each calling thread gets its own OpenMP
team of that size, so the model's threads total ``streams x threads``.

The ``auto`` rule (:data:`AUTO_RULE`; measured on 1 and 2 cores, see docs/performance.md):
small OpenMP teams scale better than one large team on few cores, and the other stages (decode, draw,
encode) need CPU too, so the model gets about one thread per core in teams of 1, 2 or 4.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

from rtsal.errors import UsageError

__all__ = ["AUTO_RULE", "MAX_STREAMS", "MAX_THREADS", "StreamPlan", "cpu_count", "plan_streams",
           "set_cli_openmp_defaults"]

MAX_STREAMS = 64
MAX_THREADS = 256

# (up to this many cores, threads per stream). streams = max(1, cores // threads), at most 8.
AUTO_RULE: tuple[tuple[int, int], ...] = ((3, 1), (8, 2), (10**9, 4))
AUTO_MAX_STREAMS = 8


class StreamPlan(NamedTuple):
    """Inference streams and torch threads per stream."""

    streams: int
    threads: int


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, e.g. under ``taskset``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_streams(value: str | int | None) -> int | None:
    """``--streams``: ``auto`` (or None) -> None, else an integer 1..MAX_STREAMS (UsageError otherwise)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--streams must be auto or a number 1..{MAX_STREAMS}, got {value!r}") from None
    if not 1 <= n <= MAX_STREAMS:
        raise UsageError(f"--streams must be auto or within 1..{MAX_STREAMS}, got {n}")
    return n


def plan_streams(streams: str | int | None = "auto", threads: int | None = None,
                 cores: int | None = None) -> StreamPlan:
    """Streams and threads per stream from ``--streams`` and ``--threads`` (None: from the rule) and the core
    count (default: this process's). Raises UsageError (exit 2, one line) for a value out of range."""
    n = parse_streams(streams)
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be within 1..{MAX_THREADS}, got {threads}")
    cores = cores or cpu_count()
    if threads is None:
        if n is None:
            threads = next(t for limit, t in AUTO_RULE if cores <= limit)
        else:
            threads = max(1, cores // n)
    if n is None:
        n = max(1, min(AUTO_MAX_STREAMS, cores // threads))
    return StreamPlan(n, threads)


def set_cli_openmp_defaults() -> None:
    """For the command line only (never for a library user): OpenMP threads sleep at once when they run out
    of work (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning for a while, so that an idle stream's team
    does not take CPU from decode, drawing, encoding or another stream. OpenMP reads it when it starts, so
    this must run before torch is imported; a value the user set is kept."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
