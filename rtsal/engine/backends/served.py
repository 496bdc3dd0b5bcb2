"""A graph backend serving an Explainer: one build per input shape, now or in the background.

:class:`ServedBackend` hands the Explainer, for each input shape, the ``run`` of a built backend (any of
``compiled``, ``onnxruntime``, ``openvino``, ``torch``) or None ("serve this call eagerly"):

- ``mode=True``: the first call for a shape builds (or loads from the cache) synchronously;
- ``mode="background"``: the first call starts a builder thread and returns None until the backend is
  ready, so the first frames are served eagerly at once and none waits. A run that ends during a build in
  this process waits for it on close (one line on stderr): it writes the cache entry the next run starts
  with. A build in a child process (the compiled backend's) is left to finish instead, detached, with one
  line (:class:`~rtsal.engine.backends.context.BuildContext`).

A build that fails is reported once on stderr and that shape stays eager (``eager (fallback)``).
``label`` says how a call without a backend was served: ``eager (building NAME)`` (``eager (compiling)``
for the compiled backend) or ``eager (fallback)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rtsal.engine.backends import Backend
from rtsal.engine.backends.context import BuildContext
from rtsal.engine.spec import FastCAMSpec
from rtsal.locks import SharedExclusiveLock

__all__ = ["ServedBackend", "factory"]

BUILDING = "building"
FAILED = "failed"
BUILDING_LABEL = {"compiled": "eager (compiling)"}  # else "eager (building NAME)"


def factory(name: str) -> Callable[..., Backend]:
    """The backend class of ``name`` (imports its runtime)."""
    if name == "openvino":
        from rtsal.engine.backends.openvino import OpenVINOBackend

        return OpenVINOBackend
    if name == "onnxruntime":
        from rtsal.engine.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    if name == "torch":
        from rtsal.engine.backends.torch import TorchBackend

        return TorchBackend
    if name == "compiled":
        from rtsal.engine.backends.compiled import CompiledBackend

        return CompiledBackend
    raise ValueError(f"no graph backend named {name!r}")


class ServedBackend:
    """Backends of one kind for one Explainer's spec and model, per input shape (see the module docstring).

    ``threads``: the runtime's threads per call (default torch's setting at build time); ``streams``: how
    many calls may run at once (the pipeline's inference streams); ``options``: further keyword arguments of
    the backend's class (the compiled backend's ``device`` and ``rebuild``)."""

    def __init__(
        self,
        name: str,
        spec: FastCAMSpec,
        model: nn.Module,
        mode: bool | str = "background",
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        streams: int = 1,
        measure_plain: bool = True,
        options: Mapping[str, Any] | None = None,
        calibration: Callable[[tuple[int, ...]], list] | None = None,
    ) -> None:
        if mode not in (True, "background"):
            raise ValueError(f"mode must be True or 'background', not {mode!r}")
        self.name = name
        self.spec = spec
        self.model = model
        self.mode = mode
        self.cache_dir = cache_dir
        self.threads = threads
        self.streams = streams
        self.make = factory(name)
        self.options = dict(options or {})
        # the Explainer's eager calls share it; only an in-process torch.export (compiled) holds it alone
        self.exclusive = SharedExclusiveLock()
        self.context = BuildContext(background=mode == "background", exclusive=self.exclusive)
        self._built: dict[tuple[int, ...], Backend | str] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False
        self.build_seconds: dict[tuple[int, ...], float] = {}
        self.source: dict[tuple[int, ...], str] = {}
        self.measure_plain = measure_plain
        # int8: the calibration samples of an input shape (openvino.calibration_samples), for the backend
        if calibration is not None:
            self.options["calibration"] = calibration
        # the plain forward pass of this runtime, per shape, timed once after the build (ms; the HUD's base)
        self.plain_ms: dict[tuple[int, ...], float | None] = {}

    def runner(self, x: Tensor) -> Callable[[Tensor, Tensor], object] | None:
        """The built backend's ``run`` for ``x``'s shape, or None: serve this call eagerly."""
        shape = tuple(x.shape)
        got = self._built.get(shape)
        if got is not None and not isinstance(got, str):
            return got.run
        if got is not None:
            return None
        if self.mode is True:
            self._built[shape] = BUILDING
            self._make(shape)
            got = self._built.get(shape)
            return None if isinstance(got, str) or got is None else got.run
        if BUILDING in self._built.values():
            return None  # one build at a time
        self._built[shape] = BUILDING
        t = threading.Thread(target=self._make, args=(shape,), name=f"rtsal-{self.name}", daemon=True)
        self._threads.append(t)
        t.start()
        return None

    def label(self, x: Tensor) -> str:
        """How a call with ``x``'s shape that got no backend was served."""
        if self._built.get(tuple(x.shape)) == FAILED:
            return "eager (fallback)"
        return BUILDING_LABEL.get(self.name, f"eager (building {self.name})")

    def _make(self, shape: tuple[int, ...]) -> None:
        t0 = time.perf_counter()
        threads = self.threads or torch.get_num_threads()
        options = dict(self.options)
        if getattr(self.make, "takes_build_context", False):
            options["context"] = self.context
        try:
            backend = self.make(self.spec.for_input(shape), self.model, cache_dir=self.cache_dir,
                                threads=threads, streams=self.streams, **options)
            x = torch.zeros(shape)
            backend.run(x, torch.full((shape[0],), -1, dtype=torch.long))  # warm up
        except Exception as exc:  # noqa: BLE001 - any runtime failure means "stay eager"
            self._built[shape] = FAILED
            if self._closed:  # the run ended meanwhile: nothing to report
                return
            self._warn(f"building the {self.name} backend for input {shape} failed ({type(exc).__name__}: "
                       f"{_first_line(exc)})")
            return
        self.build_seconds[shape] = time.perf_counter() - t0
        self.source[shape] = getattr(backend, "source", "built")
        with self._lock:
            published = not self._closed
            if published:
                self._built[shape] = backend
        if not published:
            backend.close()
            return
        # then, while it serves: the plain model of the same runtime, timed once (the HUD's base; the compiled
        # backend may have to build it first, in a child process)
        if self.measure_plain and not self._closed:
            self.plain_ms[shape] = _plain_ms(backend, x)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background builds (tests, benchmarks)."""
        for t in list(self._threads):
            t.join(timeout)

    @property
    def detached(self) -> list[subprocess.Popen]:
        """Child builds that :meth:`close` left running."""
        return self.context.detached

    def close(self, detach: bool = True) -> None:
        """Release the built backends. A build in a child process is left to finish its cache entry in the
        background (one line on stderr; :attr:`detached` keeps it), or stopped with ``detach=False``. A build
        in this process is waited for (one line on stderr): the runtime's compiler threads must not outlive
        the interpreter, and its cache entry makes the next run start with the backend."""
        with self._lock:
            self._closed = True
        children = self.context.close(detach)
        running = [t for t in self._threads if t.is_alive()]
        if running and not children:
            print(f"rtsal: finishing the {self.name} build so that the next run starts with it (cached)",
                  file=sys.stderr)
            for t in running:
                t.join()
        for t in running:  # a thread waiting on a child (stopped or detached) ends by itself
            t.join(timeout=0 if detach else 5)
        for got in list(self._built.values()):
            if not isinstance(got, str):
                got.close()

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"rtsal: {reason}; running the eager engine", file=sys.stderr)


def _plain_ms(backend: Backend, x: Tensor, calls: int = 5) -> float | None:
    """Median time of the backend's plain model (logits only) on ``x``, ms; None where it has none."""
    make = getattr(backend, "plain", None)
    if make is None:
        return None
    try:
        plain = make()
        plain(x)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            plain(x)
            times.append((time.perf_counter() - t0) * 1e3)
    except Exception:  # noqa: BLE001 - the baseline is informative only
        return None
    return sorted(times)[len(times) // 2]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]
