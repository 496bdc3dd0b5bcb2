"""The compiled engine: one AOTInductor graph per input shape, cached on disk, built now or in the background.

:class:`CompiledEngine` belongs to an :class:`~rtsal.engine.explainer.Explainer`. For each input shape
(N, 3, h, w) it hands out a loaded graph (see :mod:`rtsal.engine.graph`) or None, and None means "run the
eager engine". One graph serves every output size: it returns the per-scale maps at their own resolutions and
the engine resamples them after the call, as the eager engine does.

- ``mode=True``: the first call for a shape loads the graph from the cache or builds it, synchronously.
- ``mode="background"``: the first call starts a builder thread and returns None until the graph is loaded
  and warmed up; the caller keeps serving frames eagerly meanwhile, so no frame waits and none is dropped.
  The builder thread runs the export and C++ compile in a **child process** (``python -m
  rtsal.engine.build``) that rebuilds the model from its name and weights, writes the cache entry and exits;
  the thread then loads the verified package (about a second). Random weights go to the child as a state
  dict file. A model the child cannot rebuild (an ``nn.Module`` object) is built in the thread on a
  hook-free copy instead; ``torch.export`` patches module calls process-wide while it traces, so the eager
  engine waits on :attr:`CompiledEngine.exclusive` for those few seconds (measured: without the lock the
  serving thread's forward is caught by the tracer and fails). The lock is a readers-writer lock: eager calls
  of many inference streams share it, only the trace holds it alone.
- A loaded graph runs in parallel for many threads (``runners`` model instances, GIL released: see
  :func:`rtsal.engine.graph.load_package`), each kernel on the calling thread's ``torch.set_num_threads``.
- **A run that ends during a child build** (a video shorter than the build) leaves the child to finish in the
  background, detached (its own session: Ctrl-C of the run does not reach it), with one line on stderr, so
  the next run starts compiled. It writes the entry atomically; a lock file per key in the cache folder
  (:meth:`rtsal.engine.cache.Cache.store`) makes a second process wait for that build and reuse it instead
  of building the same key again.
- Anything that fails (no C++ compiler, an op the exporter rejects, a head whose gradient cannot be
  separated from the trunk, an unsafe cache folder) is reported once on stderr and that Explainer keeps the
  eager engine. Heads without a closed-form CAM have their gradient traced into the graph
  (:func:`rtsal.engine.graph.trace_head_grad`).

``engine_label`` says which engine drew a result: ``compiled``, ``eager``, ``eager (compiling)`` or
``eager (fallback)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rtsal.engine.cache import FORMAT, Cache
from rtsal.engine.graph import ExplainGraph, GraphOutput, build_package, clean_copy, load_package
from rtsal.engine.precision import lower
from rtsal.locks import SharedExclusiveLock

__all__ = ["CompiledEngine", "weights_hash"]

# torch's C++ extension helper warns "No CUDA runtime is found, using CUDA_HOME=..." on every CPU-only build
# where a CUDA toolkit folder exists: not a problem of the run, so not said on every compile
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

Runner = Callable[[Tensor, Tensor], GraphOutput]
BUILDING = "building"
FAILED = "failed"


def default_runners() -> int:
    """Model instances per loaded graph: how many threads may be inside it at once (one per core, 2..16;
    more callers wait for a free one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(2, min(16, cores))


def weights_hash(module: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every parameter and buffer, 32 hex digits."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()[:32]


class CompiledEngine:
    """Compiled graphs for one Explainer, per input shape and output size. See the module docstring."""

    def __init__(
        self,
        explainer: Any,
        mode: bool | str,
        cache_dir: str | os.PathLike | None = None,
        rebuild: Mapping[str, object] | None = None,
        subprocess_build: bool = True,
        runners: int | None = None,
    ) -> None:
        if mode not in (True, "background"):
            raise ValueError(f"compile must be False, True or 'background', not {mode!r}")
        self.mode = mode
        self.ex = explainer
        self.cache = Cache(cache_dir)
        self.rebuild = dict(rebuild) if rebuild is not None else None  # how a child rebuilds the model
        self.subprocess_build = subprocess_build
        self._graphs: dict[tuple[int, ...], Runner | str] = {}
        self._threads: list[threading.Thread] = []
        self._procs: list[subprocess.Popen] = []
        self.detached: list[subprocess.Popen] = []  # child builds left running by close()
        self._lock = threading.Lock()
        # eager forward passes share it (hold()); an in-process export holds it alone (hold(exclusive=True))
        self.exclusive = SharedExclusiveLock()
        self.runners = runners or default_runners()
        self._closed = False
        self._warned = False
        self.build_seconds: dict[tuple[int, ...], float] = {}
        self.source: dict[tuple[int, ...], str] = {}  # key -> "cache" | "built" | "child"
        self.reason: str | None = None
        self._weights = weights_hash(explainer.model) if self.reason is None else ""

    # -- what the explainer asks ----------------------------------------------------------------------------
    def runner(self, x: Tensor) -> Runner | None:
        """The loaded graph for ``x``'s shape (N, 3, h, w), or None: serve this call eagerly. One graph serves
        every output size: the maps are resampled after it."""
        if self.reason is not None:
            return None
        shape = tuple(x.shape)
        got = self._graphs.get(shape)
        if callable(got):
            return got
        if got is not None:  # building or failed
            return None
        if self.mode is True:
            self._graphs[shape] = BUILDING
            self._make(shape, background=False)
        else:
            if BUILDING in self._graphs.values():
                return None  # one build at a time; this shape is tried again when that one is done
            self._graphs[shape] = BUILDING
            t = threading.Thread(target=self._make, args=(shape, True), name="rtsal-compile", daemon=True)
            self._threads.append(t)
            t.start()
            return None
        got = self._graphs.get(shape)
        return got if callable(got) else None

    def label(self, x: Tensor) -> str:
        """How a call with ``x``'s shape that did not get a graph was served."""
        if self.reason is not None or self._graphs.get(tuple(x.shape)) == FAILED:
            return "eager (fallback)"
        return "eager (compiling)"

    def close(self, detach: bool = True) -> None:
        """Release the loaded graphs. A child build still running is left to finish the cache entry in the
        background (one line on stderr; :attr:`detached` keeps it), or stopped with ``detach=False``."""
        with self._lock:
            self._closed = True
            running = [p for p in self._procs if p.poll() is None]
        for p in running:
            if detach:
                self.detached.append(p)
                print(f"rtsal: the compiled graph is still building (process {p.pid}); it finishes in the "
                      f"background and the next run at this input size starts compiled", file=sys.stderr)
            else:
                _stop(p)
        for t in self._threads:
            t.join(timeout=0 if running else 1)
        for got in list(self._graphs.values()):
            close = getattr(getattr(got, "runner", None), "close", None)
            if close is not None:
                close()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background builds (tests, benchmarks)."""
        for t in list(self._threads):
            t.join(timeout)

    # -- the spec and the build -----------------------------------------------------------------------------
    def spec(self, shape: tuple[int, ...]) -> dict[str, object]:
        """Everything that changes the graph of input shape ``shape`` = (N, 3, h, w): the cache key."""
        ex = self.ex
        return {
            "format": FORMAT,
            "model": ex.name,
            "class": f"{type(ex.model).__module__}.{type(ex.model).__qualname__}",
            "weights": self._weights,
            "shape": list(shape),
            "channels_last": ex.channels_last,
            "method": ex.method,
            "cam": ex.cam_name,
            "head": "linear" if ex.closed_form else "gradient",  # closed-form CAM or the traced gradient
            "norm": ex.norm_name,
            "statistic": ex.statistic,
            "graph_statistic": _graph_statistic(ex.statistic),
            "layer_weights": [float(w) for w in ex.weights],
            "layers": [[i.name, i.call, bool(r)] for i, r in zip(ex.layers, ex._relu, strict=True)],
            "topk": ex.topk,
            "dtype": "float32",
            "precision": ex.precision,  # bf16: rtsal.engine.precision.lower
            "device": str(ex.device),
            "torch": torch.__version__,
            "cpu": torch.backends.cpu.get_cpu_capability(),
            "omp": "frozen-noprepack",  # frozen under no_grad, teams sized by the caller (build_configs)
        }

    def _make(self, shape: tuple[int, ...], background: bool) -> None:
        t0 = time.perf_counter()
        try:
            spec = self.spec(shape)
            package = self.cache.lookup(spec)
            source = "cache"
            if package is None:
                if background and self.subprocess_build and self.rebuild is not None:
                    package, source = self._build_in_child(spec, shape), "child"
                if self._closed:
                    return
                if package is None:
                    package = self.cache.store(spec, lambda tmp: self._build_here(shape, tmp))
                    source = "built"
            if self._closed:
                return
            run = load_package(package, self.runners, str(self.ex.device))
            x = torch.zeros(shape, device=self.ex.device)
            if self.ex.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            run(x, torch.full((shape[0],), -1, dtype=torch.long, device=self.ex.device))  # warm up
        except Exception as exc:  # noqa: BLE001 - any compiler/exporter failure means "stay eager"
            self._graphs[shape] = FAILED
            self._warn(f"compiling the engine for input {shape} failed ({type(exc).__name__}: "
                       f"{_first_line(exc)})")
            return
        self.build_seconds[shape] = time.perf_counter() - t0
        self.source[shape] = source
        with self._lock:
            if not self._closed:
                self._graphs[shape] = run
                return
        close = getattr(getattr(run, "runner", None), "close", None)
        if close is not None:
            close()

    def graph_module(self, out_size: tuple[int, int] | None = None) -> ExplainGraph:
        """A fresh :class:`ExplainGraph` over a hook-free copy of the explainer's model."""
        return make_graph(self.ex, clean_copy(self.ex.model), out_size)

    def _build_here(self, shape: tuple[int, ...], path: Path) -> None:
        graph = self.graph_module()
        try:
            x = torch.randn(shape, device=self.ex.device)
            if self.ex.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lower(graph, self.ex.precision, x)  # bf16: the trunk under autocast, the first blocks f32
            build_package(graph, x, path, export_lock=self.exclusive.hold(exclusive=True))
        finally:
            graph.close()

    def _build_in_child(self, spec: Mapping[str, object], shape: tuple[int, ...]) -> Path | None:
        """Run ``python -m rtsal.engine.build`` to write the entry; the package path, or None when the child
        could not rebuild the same model (the caller then builds in this process)."""
        job = {"explainer": dict(self.rebuild or {}), "shape": list(shape), "spec": spec,
               "cache": str(self.cache.root)}
        state = None
        if job["explainer"].get("weights") is None:  # random weights: hand over this model's state dict
            with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as g:
                state = g.name
            torch.save(self.ex.model.state_dict(), state)
            job["explainer"]["weights"] = state
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({**job, "delete": [p for p in (f.name, state) if p]}, f)  # the child removes them
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = None
        # stderr to an unlinked file, not a pipe: a detached child outlives this process's end of a pipe
        with tempfile.TemporaryFile() as err:
            try:
                with self._lock:
                    if self._closed:
                        return None
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "rtsal.engine.build", f.name],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                        start_new_session=True,  # Ctrl-C of the run does not stop a build left to finish
                    )
                    self._procs.append(proc)
                proc.wait()
            finally:
                if proc is None or proc.poll() is not None:  # else the running child removes them
                    for p in (f.name, state):
                        if p is not None:
                            with contextlib.suppress(OSError):
                                os.unlink(p)
            err.seek(0)
            text = err.read().decode(errors="replace").strip()
        if proc.returncode == 3:  # the child's model is not this one (see rtsal.engine.build)
            return None
        if proc.returncode != 0:
            raise RuntimeError(_first_line(text.splitlines()[-1:] or [f"exit status {proc.returncode}"]))
        package = self.cache.lookup(spec)
        if package is None:
            raise RuntimeError("the child build wrote no valid cache entry")
        return package

    def _fail(self, reason: str) -> None:
        self.reason = reason
        self._warn(reason)

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"rtsal: {reason}; running the eager engine", file=sys.stderr)


def _graph_statistic(name: str) -> str:
    """The cache key's name of the statistic's formulation inside the compiled graph."""
    from rtsal.engine.saliency.smoe import runtime_statistic

    fn = runtime_statistic(name, "compiled")
    return "smoe_fastlog" if fn.__name__ == "smoe_scale_fastlog" else name


def make_graph(ex: Any, model: nn.Module, out_size: tuple[int, int] | None = None) -> ExplainGraph:
    """The :class:`ExplainGraph` for ``ex``'s settings over ``model`` (a hook-free module)."""
    from rtsal.engine.saliency.norm import NORMS
    from rtsal.engine.saliency.smoe import runtime_statistic

    stat = runtime_statistic(ex.statistic, "compiled")  # log2 from the float bits fuses into the reduction
    return ExplainGraph(
        model,
        ex.layers,
        ex._relu,
        ex._weights_t,
        ex._head_weight if ex.closed_form else None,
        ex.cam_name,
        stat,
        NORMS[ex.norm_name],
        ex.topk,
        cam_relu=ex.layers[-1].relu,
        out_size=out_size,
    )


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a child build and reap it (it removes its temporary file on SIGTERM)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _first_line(exc: object) -> str:
    text = exc if isinstance(exc, str) else (exc[0] if isinstance(exc, list) else str(exc))
    return (str(text).strip().splitlines() or ["no message"])[0][:200]



def rebuild_args(model: object, weights: object, **settings: object) -> dict[str, object] | None:
    """The Explainer arguments a child process needs to rebuild the same model, as JSON values; None when it
    cannot (an ``nn.Module`` object). ``weights`` None (random) is filled in with a state dict file at build
    time."""
    if not isinstance(model, str):
        return None
    w = weights if weights in ("default", None) else os.path.abspath(os.fspath(weights))  # type: ignore
    out: dict[str, object] = {"model": model, "weights": w}
    for k, v in settings.items():
        if isinstance(v, tuple):
            v = list(v)
        if k in ("mean", "std", "layers", "layer_weights") and v is not None and not isinstance(v, str):
            v = list(v)  # type: ignore[call-overload]
        out[k] = v
    return out


def explain_graph(
    ex: Any,
    run: Runner,
    x: Tensor,
    out_size: tuple[int, int],
    target: Tensor | None,
    timings: dict[str, float],
    t0: float,
    method: str,
    engine: str = "compiled",
):
    """One call of a backend's graph, turned into the same :class:`~rtsal.types.SaliencyResult` the eager
    engine returns. ``target``: None (top-1) or (N,) classes already checked by the explainer."""
    from rtsal.engine.result import assemble

    n = x.shape[0]
    # the package was built for dense inputs: a broadcast target (stride 0) or another memory format would
    # be read with the wrong strides
    tgt = torch.full((n,), -1, dtype=torch.long, device=x.device) if target is None else target.contiguous()
    x = x.contiguous(memory_format=torch.channels_last if ex.channels_last else torch.contiguous_format)
    t1 = _now(ex.device)
    out = run(x, tgt)
    t2 = _now(ex.device)
    timings["forward"] = (t2 - t1) * 1e3
    # ``method`` selects ``saliency`` for this call; its CAM is the graph's (the explainer checks)
    result = assemble(method, out.logits, out.target, out.cam_small, out.maps, out_size, ex._weights_t,
                      ex.class_names, ex.topk, tuple(i.label for i in ex.layers), timings, engine)
    t3 = _now(ex.device)
    timings["saliency"] = (t3 - t2) * 1e3
    timings["total"] = (t3 - t0) * 1e3
    return result
