"""The compiled backend: the spec's graph exported by ``torch.export`` and compiled by AOTInductor, cached.

Built from a :class:`~rtsal.engine.spec.FastCAMSpec` for one input shape and the module, like the other
backends; run by :class:`~rtsal.engine.backends.served.ServedBackend` (eager frames while it builds).

- **Graph**: :func:`~rtsal.engine.backends.common.graph_of` ``(spec, clean copy of the model, "compiled")``
  (the statistic with log2 from the float bits, which fuses into the reduction); a head without a closed
  form has its gradient traced by :func:`~rtsal.engine.graph.build_package` with the export.
- **Build** (:func:`build_entry`): :func:`~rtsal.engine.graph.build_package` under ``no_grad`` with the
  frozen, no-prepack Inductor settings and torch's thread count at the machine's cores while Inductor
  generates code (docs/graph-cost.md). ``torch.export`` patches module calls process-wide while it traces,
  so an in-process build holds the serving Explainer's lock alone meanwhile (``BuildContext.exclusive``).
- **Cache** (:func:`cache_key`): the entry's key is the spec plus what else changes the package (torch
  version, CPU capability, device, graph format, build settings), kept by :class:`~rtsal.engine.cache.Cache`
  (0700 folder, SHA-256 checked before loading, atomic writes, one build per key across processes).
- **Child build**: in the background, a model that can be rebuilt from its name and weights (``rebuild``,
  see :func:`rebuild_args`) is built by ``python -m rtsal.engine.build JOB.json`` from the spec's JSON (random
  weights go over as a state dict file): the serving process keeps its cores and stays responsive, and a run
  that closes meanwhile leaves the child to finish the entry, detached, with one line on stderr
  (:class:`~rtsal.engine.backends.context.BuildContext`). A child that cannot rebuild the same weights exits 3
  and the build runs here instead.
- **Run**: the package is loaded through its C interface (:func:`~rtsal.engine.graph.load_package`,
  without importing ``torch._inductor``), with one model instance per core so that the inference streams
  run it at once, each kernel on the calling thread's ``torch.set_num_threads``.

A machine without a C++ compiler (Inductor needs one) fails the build at once with one line; the Explainer
then serves eagerly (``eager (fallback)``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rtsal.engine.backends.common import graph_of, quiet_cpp_extension
from rtsal.engine.cache import FORMAT, Cache
from rtsal.engine.graph import GraphOutput, ParallelRunner, build_package, clean_copy, load_package
from rtsal.engine.precision import lower
from rtsal.engine.saliency.smoe import runtime_statistic
from rtsal.engine.spec import FastCAMSpec, weights_hash

if TYPE_CHECKING:
    from rtsal.engine.backends.context import BuildContext

__all__ = [
    "BuildCancelled", "CompiledBackend", "build_entry", "cache_key", "default_runners", "rebuild_args",
    "rebuild_model",
]

quiet_cpp_extension()

BUILD = "frozen-noprepack"  # the build settings in the key: frozen under no_grad, teams sized by the caller
CHILD_NOT_SAME = 3  # the child's exit status when the model it rebuilt is not the parent's


class BuildCancelled(RuntimeError):
    """The run that wanted this build closed before it was done (not a failure to report)."""


def default_runners() -> int:
    """Model instances per loaded graph: how many threads may be inside it at once (one per core, 2..16;
    more callers wait for a free one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(2, min(16, cores))


def cache_key(spec: FastCAMSpec, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything the package of ``spec`` (with an input shape) depends on: the cache's key and record."""
    if spec.shape is None:
        raise ValueError("the spec holds no input shape: use spec.for_input(shape)")
    return {
        "backend": "compiled",
        "format": FORMAT,
        "model": spec.model,
        "shape": list(spec.shape),
        "method": spec.method,
        "spec": spec.to_dict(),
        "statistic": runtime_statistic(spec.statistic, "compiled").__name__,
        "device": str(torch.device(device)),
        "torch": torch.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "build": BUILD,
    }


def require_compiler() -> None:
    """RuntimeError (one line) when no C++ compiler is on the PATH: AOTInductor compiles C++."""
    from rtsal.engine.backends import installed

    if not installed("compiled"):
        raise RuntimeError("no C++ compiler found (AOTInductor needs one: install g++ or set $CXX)")


def build_entry(
    spec: FastCAMSpec,
    model: nn.Module,
    path: Path,
    device: str | torch.device = "cpu",
    context: BuildContext | None = None,
) -> None:
    """Export and compile ``spec``'s graph over a hook-free copy of ``model`` into the package ``path``.
    ``context.exclusive`` (the serving Explainer's lock) is held alone while the graph is traced."""
    require_compiler()

    def alone() -> contextlib.AbstractContextManager:
        return context.exclusive.hold(exclusive=True) if context is not None else contextlib.nullcontext()

    with alone():
        graph = graph_of(spec, clean_copy(model).eval(), "compiled")
    try:
        x = torch.randn(spec.shape, device=device)  # type: ignore[arg-type]
        if spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lower(graph, spec.precision, x)  # bf16: the trunk under autocast, the first blocks f32
        build_package(graph, x, path, export_lock=alone())
    finally:
        graph.close()


class PlainGraph(nn.Module):
    """The plain model as :func:`~rtsal.engine.graph.build_package` takes a graph: ``(x, target) ->
    (logits,)`` (the target unused), so that the compiled backend's baseline is the same runtime's plain
    forward pass."""

    needs_head_grad = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor]:
        return (self.model(x),)


def plain_key(spec: FastCAMSpec, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The cache key of the plain model's package for ``spec`` (the explained graph's key, marked plain)."""
    return {**cache_key(spec, device), "method": "plain", "plain": True}


def build_plain_entry(
    spec: FastCAMSpec,
    model: nn.Module,
    path: Path,
    device: str | torch.device = "cpu",
    context: BuildContext | None = None,
) -> None:
    """Compile the plain model of ``spec`` (logits only; at bf16 the whole model under CPU autocast, as a
    PyTorch user runs it) into the package ``path``, with the same build settings as the explained graph."""
    require_compiler()
    graph = PlainGraph(clean_copy(model).eval())
    x = torch.randn(spec.shape, device=device)  # type: ignore[arg-type]
    if spec.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if spec.precision == "bf16":
        forward = graph.model.forward

        def at_bf16(*args: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return forward(*args).float()

        graph.model.forward = at_bf16
    lock = context.exclusive.hold(exclusive=True) if context is not None else contextlib.nullcontext()
    build_package(graph, x, path, export_lock=lock)  # type: ignore[arg-type]


def rebuild_args(model: object, weights: object) -> dict[str, Any] | None:
    """How a child process rebuilds the Explainer's module, as JSON values: the model's name and its weights
    (``default``, a path, or None for random weights, handed over as a state dict at build time); None for
    an ``nn.Module`` object, which only this process has."""
    if not isinstance(model, str):
        return None
    w = weights if weights in ("default", None) else os.path.abspath(os.fspath(weights))  # type: ignore
    return {"model": model, "weights": w}


def rebuild_model(source: Mapping[str, Any], spec: FastCAMSpec, device: str = "cpu") -> nn.Module | None:
    """The module ``source`` (see :func:`rebuild_args`) names, in the spec's memory format, or None when it is
    not the spec's (another class or other weights)."""
    from rtsal.models import load_model

    module = load_model(source["model"], source["weights"]).module.to(device).eval()
    if spec.channels_last:
        module = module.to(memory_format=torch.channels_last)
    cls = f"{type(module).__module__}.{type(module).__qualname__}"
    if cls != spec.model_class or weights_hash(module) != spec.weights:
        return None
    return module


class CompiledBackend:
    """``spec``'s graph as a loaded AOTInductor package (see the module docstring).

    ``rebuild``: what a child process rebuilds the model from (:func:`rebuild_args`), used when ``context``
    says the build runs in the background; ``threads`` is not used (each call runs on the calling thread's
    torch thread count); ``streams`` raises the number of model instances when above one per core."""

    name = "compiled"
    takes_build_context = True  # ServedBackend passes its BuildContext

    def __init__(
        self,
        spec: FastCAMSpec,
        model: nn.Module,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        streams: int = 1,
        *,
        device: str | torch.device = "cpu",
        rebuild: Mapping[str, Any] | None = None,
        context: BuildContext | None = None,
    ) -> None:
        if spec.shape is None:
            raise ValueError("the spec holds no input shape")
        if spec.precision not in ("f32", "bf16"):
            raise ValueError(f"the compiled backend runs f32 or bf16, not {spec.precision}")
        self.spec = spec
        self.device = torch.device(device)
        self.cache = Cache(cache_dir)
        self.key = cache_key(spec, self.device)
        self.runners = max(default_runners(), int(streams))
        self._model, self._rebuild, self._context = model, rebuild, context
        self._plain: Any = None
        package, self.source = self._package(model, rebuild, context)
        self._run = load_package(package, self.runners, str(self.device))
        self.runner = self._run.runner  # type: ignore[attr-defined]  # ParallelRunner: close(), peak
        self._layout = torch.channels_last if spec.channels_last else torch.contiguous_format

    def _package(self, model: nn.Module, rebuild: Mapping[str, Any] | None,
                 context: BuildContext | None) -> tuple[Path, str]:
        """The verified package of this spec and where it came from: ``cache``, ``child`` or ``built``."""
        found = self.cache.lookup(self.key)
        if found is not None:
            return found, "cache"
        if context is not None and context.background and rebuild is not None:
            package = self._build_in_child(model, rebuild, context, self.key)
            if package is not None:
                return package, "child"
        if context is not None and context.closed:
            raise BuildCancelled("the run closed")
        return self.cache.store(self.key, lambda tmp: build_entry(self.spec, model, tmp, self.device,
                                                                   context)), "built"

    def plain(self) -> Any:
        """The plain model (logits only) compiled by AOTInductor with the same settings, cached: a callable
        ``x -> None``, the baseline of the maps' cost on this runtime (the HUD). Built like the explained
        graph: in a child process when this one serves in the background, so that Inductor is not imported
        here."""
        key = plain_key(self.spec, self.device)
        package = self.cache.lookup(key)
        ctx, rebuild = self._context, self._rebuild
        if package is None and ctx is not None and ctx.background and rebuild is not None:
            package = self._build_in_child(self._model, rebuild, ctx, key, plain=True)
        if package is None:
            package = self.cache.store(key, lambda tmp: build_plain_entry(self.spec, self._model, tmp,
                                                                          self.device, ctx))
        self._plain = ParallelRunner(package, 1)
        target = torch.full((self.spec.shape[0],), -1, dtype=torch.long)  # type: ignore[index]

        def call(x: Tensor) -> None:
            self._plain(x.to(self.device, torch.float32).contiguous(memory_format=self._layout), target)

        return call

    def _build_in_child(self, model: nn.Module, rebuild: Mapping[str, Any], context: BuildContext,
                        key: Mapping[str, Any], plain: bool = False) -> Path | None:
        """Run ``python -m rtsal.engine.build`` to write the entry ``key`` (``plain``: the plain model's);
        the package, or None when the child could not rebuild the same model (the caller then builds in this
        process)."""
        require_compiler()
        self.cache.ensure()
        source = dict(rebuild)
        state = None
        if source.get("weights") is None:  # random weights: hand over this model's state dict
            with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as g:
                state = g.name
            torch.save(model.state_dict(), state)
            source["weights"] = state
        job = {"spec": self.spec.to_json(), "model": source, "device": str(self.device),
               "cache": str(self.cache.root), "plain": plain}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({**job, "delete": [p for p in (f.name, state) if p]}, f)  # the child removes them
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = None
        # stderr to an unlinked file, not a pipe: a detached child outlives this process's end of a pipe
        with tempfile.TemporaryFile() as err:
            try:
                proc = context.spawn(
                    [sys.executable, "-m", "rtsal.engine.build", f.name],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                    start_new_session=True,  # Ctrl-C of the run does not stop a build left to finish
                )
                if proc is None:
                    raise BuildCancelled("the run closed")
                proc.wait()
            finally:
                if proc is None or proc.poll() is not None:  # else the running child removes them
                    for p in (f.name, state):
                        if p is not None:
                            with contextlib.suppress(OSError):
                                os.unlink(p)
            err.seek(0)
            text = err.read().decode(errors="replace").strip()
        if context.closed and proc.returncode != 0:
            raise BuildCancelled("the run closed")
        if proc.returncode == CHILD_NOT_SAME:
            return None
        if proc.returncode != 0:
            lines = text.splitlines()
            raise RuntimeError(lines[-1] if lines else f"the child build ended with status {proc.returncode}")
        package = self.cache.lookup(key)
        if package is None:
            raise RuntimeError("the child build wrote no valid cache entry")
        return package

    def run(self, x: Tensor, target: Tensor) -> GraphOutput:
        """One call; the GIL is released meanwhile. The package was built for dense inputs in the spec's
        memory format: anything else (a broadcast target, another layout) is made so first."""
        x = x.to(self.device, torch.float32).contiguous(memory_format=self._layout)
        return self._run(x, target.to(self.device).contiguous())

    def close(self) -> None:
        """Delete the loaded graph once the calls inside it have returned; later calls raise RuntimeError."""
        for runner in (self.runner, self._plain):
            close = getattr(runner, "close", None)
            if close is not None:
                close()

