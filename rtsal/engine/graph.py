"""The whole explanation as one graph: forward pass + every map, ready for ``torch.export`` and AOTInductor.

:class:`ExplainGraph` wraps a copy of the classifier whose scale-end outputs are recorded by its own
:class:`~rtsal.engine.hooks.ActivationRecorder` (hooks run as plain Python while ``torch.export`` traces, so
they end up inside the graph). Its forward returns logits, top-k probabilities and indices, the explained
class, the raw CAM and the normalised per-scale maps, each at its own resolution; the host assembler
(:func:`rtsal.engine.result.assemble`) then upsamples, combines and fuses them to the output size (OpenCV on
the CPU), as for the eager engine: measured, that resampling inside the graph cost more than the whole eager
saliency step. Every backend builds it from a spec (:func:`rtsal.engine.backends.common.graph_of`).

The CAM is in the graph for every head. A global-average-pool -> linear head has a closed form from its
weights. Any other head (MobileNetV3, VGG, ConvNeXt) needs the gradient of the class score with respect to
the last scale-end tensor: :func:`trace_head_grad` traces the model's forward from that tensor on, and the
head's backward pass, into one functional graph of aten ops ``(a, target) -> g`` (``make_fx`` through
``torch.func.grad``, functionalised, dead code removed), which :class:`ExplainGraph` calls like any module, so
``torch.export`` and AOTInductor compile the head's gradient with the rest. (``torch.export`` cannot trace
``torch.autograd.grad`` or ``torch.func.grad`` itself; a graph of the backward's aten ops it can.) A head
that reads more than that tensor (a skip connection around it) cannot be separated: the build fails with
one line and the engine stays eager.

:func:`build_package` exports one such graph for one input shape and compiles it with AOTInductor into a
``.pt2`` package; :func:`load_package` loads it back as a callable ``(x, target) -> GraphOutput`` that many
threads may call at once (the inference streams): see :class:`ParallelRunner`.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rtsal.engine.hooks import ActivationRecorder, HookOwner
from rtsal.engine.saliency.cam import CAMS, cam_from_linear_head
from rtsal.engine.saliency.fastcam import scale_maps
from rtsal.types import LayerInfo

__all__ = [
    "ExplainGraph",
    "GraphOutput",
    "HeadError",
    "ParallelRunner",
    "build_package",
    "clean_copy",
    "load_package",
    "trace_head_grad",
]


class GraphOutput(NamedTuple):
    """What the graph returns for a batch of N images: the model's outputs and the per-scale maps at their own
    resolutions. Upsampling, combination and fusion to the output size run after the graph, as in the eager
    engine (OpenCV on the CPU: cheaper than the same resampling inside the compiled graph, measured)."""

    logits: Tensor  # (N, classes)
    top_p: Tensor  # (N, k) softmax probabilities, descending
    top_i: Tensor  # (N, k) class indices
    target: Tensor  # (N,) the class the CAM explains
    cam_small: Tensor  # (N, h, w) raw CAM at the last scale
    maps: tuple[Tensor, ...]  # L normalised per-scale maps (N, h_l, w_l)


class ExplainGraph(nn.Module):
    """``forward(x, target)``: the model and every FastCAM map in one traceable function.

    Args:
        model: the classifier (a hook-free copy: see :func:`clean_copy`); this module registers its own hooks.
        layers: the scale-end layers; ``relu[l]`` applies ReLU to layer l first.
        weights: (L,) scale weights summing to 1.
        head_weight: (classes, C) weight of the linear head after global average pooling, or None: the CAM
            takes the head's gradient, traced by :meth:`trace_head` (which :func:`build_package` calls).
        cam: ``gradcam`` or ``gradcampp``; statistic and norm: pure functions as in
            :mod:`rtsal.engine.saliency`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[LayerInfo],
        relu: Sequence[bool],
        weights: Tensor,
        head_weight: Tensor | None,
        cam: str,
        statistic: Callable[[Tensor], Tensor],
        norm: Callable[[Tensor], Tensor],
        topk: int,
        cam_relu: bool,
    ) -> None:
        super().__init__()
        self.model = model
        self.relu = tuple(relu)
        self.register_buffer("weights", weights.detach().clone(), persistent=False)
        hw = None if head_weight is None else head_weight.detach().clone()
        self.register_buffer("head_weight", hw, persistent=False)
        self.head_layer = layers[-1]
        self.head_grad: nn.Module | None = None  # (a, target) -> g, from trace_head
        self.cam = cam
        self.statistic = statistic
        self.norm = norm
        self.topk = topk
        self.cam_relu = cam_relu
        self.recorder = ActivationRecorder(model, layers)
        self.recorder.__enter__()

    def close(self) -> None:
        """Remove this graph's hooks from its model."""
        self.recorder.close()

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """``x`` (N, 3, h, w) preprocessed; ``target`` (N,) long, a negative entry means "the top-1 class".
        Returns the fields of :class:`GraphOutput` as a plain tuple (what the exporter serialises)."""
        # f32 whatever the model computed in (a bf16 trunk: rtsal.engine.precision); a no-op at f32
        logits = self.model(x).float()
        acts = [a.float() for a in self.recorder.pop()]
        tgt = torch.where(target < 0, logits.argmax(dim=1), target)
        if self.head_weight is None:  # as the eager engine: the CAM of the raw tensor and its gradient
            if self.head_grad is None:
                raise RuntimeError("the head's gradient is not traced: call trace_head(example) first")
            cam_small = CAMS[self.cam](acts[-1], self.head_grad(acts[-1], tgt))
        else:
            last = torch.relu(acts[-1]) if self.cam_relu else acts[-1]
            cam_small = cam_from_linear_head(last, self.head_weight, tgt, self.cam)
        maps = scale_maps(acts, self.relu, self.statistic, self.norm)
        probs = torch.softmax(logits, dim=1)
        top_p, top_i = probs.topk(self.topk, dim=1)
        return (logits, top_p, top_i, tgt, cam_small, *maps)

    @property
    def needs_head_grad(self) -> bool:
        """True when the CAM takes the head's gradient (no closed form)."""
        return self.head_weight is None

    def trace_head(self, example: Tensor) -> None:
        """Trace the head's gradient for inputs shaped like ``example`` (see :func:`trace_head_grad`), with
        this graph's recorder detached meanwhile (the trace runs the model three times)."""
        self.recorder.close()
        try:
            self.head_grad = trace_head_grad(self.model, self.head_layer, example)
        finally:
            self.recorder.__enter__()


def clean_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without the hooks of any :class:`ActivationRecorder` (the serving engine's, or
    another explainer's on the same module), so a build never touches a serving recorder. Other hooks of the
    model are kept: they are part of what it computes."""
    dup = copy.deepcopy(model)
    for m in dup.modules():
        for store in (m._forward_hooks, m._forward_pre_hooks):
            for i in [k for k, fn in store.items() if _is_recorder_hook(fn)]:
                del store[i]
    return dup


def _is_recorder_hook(fn: object) -> bool:
    return getattr(fn, "__qualname__", "").startswith(f"{ActivationRecorder.__qualname__}.")


class HeadError(RuntimeError):
    """The head cannot be separated from the trunk at the last scale-end layer."""


class _Substitute(HookOwner):
    """Hooks on ``model`` that record the output of ``layer`` (its ``call``-th call in a forward pass) while
    :attr:`value` is None, and replace that output with a copy of :attr:`value` otherwise."""

    def __init__(self, model: nn.Module, layer: LayerInfo) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.value: Tensor | None = None
        self.recorded: Tensor | None = None
        self._calls = 0

    def attach(self) -> None:
        self.pre_hook(self.model, self._reset)
        self.hook(dict(self.model.named_modules())[self.layer.name], self._swap)

    def _reset(self, module: nn.Module, args: object) -> None:
        self._calls = 0

    def _swap(self, module: nn.Module, args: object, out: Tensor) -> Tensor | None:
        call, self._calls = self._calls, self._calls + 1
        if call != self.layer.call:
            return None
        if self.value is None:
            self.recorded = out.detach()
            return None
        return self.value.clone()  # a copy: in-place ops after the layer must not touch the traced input


def trace_head_grad(model: nn.Module, layer: LayerInfo, x: Tensor) -> nn.Module:
    """The gradient of the target class score with respect to ``layer``'s output, as one graph module.

    ``model`` (eval mode) is run on ``x`` (N, 3, h, w) to get that output ``a`` (N, C, h', w'); then its
    forward pass with the output replaced by ``a``, the score ``logits[n, target[n]]`` summed over the batch,
    and the gradient are traced with ``make_fx`` (``torch.func.grad``, functionalised, so the trunk's in-place
    ops do not keep it alive), the last linear layer's backward becomes a row pick (:func:`_pick_rows`) and
    everything that does not lead to the gradient is removed. The result takes
    ``(a, target)``, (N, C, h', w') and (N,) long, and returns ``g`` (N, C, h', w'); it holds only aten ops
    and shares the head's parameters with ``model``, so ``torch.export`` can trace it (shapes are fixed to
    ``x``'s). Raises :class:`HeadError` when the logits depend on more than ``a`` (the trunk would stay in
    the graph), or when the traced gradient differs from autograd's on ``x``. Holds no hook afterwards.

    Module calls are patched process-wide while ``make_fx`` traces: call it where ``torch.export`` may run
    (under the engine's export lock).
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    with _Substitute(model, layer) as sub, torch.no_grad():
        logits = model(x)
        a = sub.recorded
        if a is None:
            raise HeadError(f"layer {layer.label!r} produced no output")
        target = logits.argmax(dim=1)

        def grad(x: Tensor, a: Tensor, target: Tensor) -> Tensor:
            def score(a: Tensor) -> Tensor:
                sub.value = a
                try:
                    out = model(x)
                finally:
                    sub.value = None
                return out.gather(1, target.view(-1, 1)).sum()

            return torch.func.grad(score)(a)

        gm = make_fx(torch.func.functionalize(grad, remove="mutations_and_views"), tracing_mode="real")(
            x, a, target
        )
        gm.graph.eliminate_dead_code()
        x_node = next(n for n in gm.graph.nodes if n.op == "placeholder")
        if x_node.users:
            raise HeadError(
                f"the head after {layer.label!r} reads more than that layer's output, so its gradient "
                "cannot be separated from the trunk"
            )
        gm.graph.erase_node(x_node)
        _pick_rows(gm.graph)
        gm.graph.eliminate_dead_code()
        gm.recompile()
        # the trace against autograd on this input (a head with data-dependent branches would differ)
        leaf = a.clone().requires_grad_(True)
        sub.value = leaf
        try:
            with torch.enable_grad():
                ref = model(x).gather(1, target.view(-1, 1)).sum()
                (g_ref,) = torch.autograd.grad(ref, leaf)
        finally:
            sub.value = None
        g = gm(a, target)
        scale = float(g_ref.abs().max()) + 1e-12
        if not bool(torch.isfinite(g).all()) or float((g - g_ref).abs().max()) > 1e-3 * scale:
            raise HeadError(f"the traced head gradient after {layer.label!r} differs from autograd's")
    return gm


def _pick_rows(graph: torch.fx.Graph) -> None:
    """Make the traced gradient of ``logits[n, target[n]]`` cheap where the head ends in a linear layer.

    Autograd seeds the backward pass with ``ones_like(score)`` (which keeps the head's whole forward alive,
    although only the score's shape is read) and sends the one-hot gradient of the gathered logits through
    the last linear layer as ``mm(scatter_add(zeros, 1, target, src), W)``, which reads all of ``W``. The
    first becomes a constant of the same shape, the second ``src * W[target]`` (the rows the one-hot picks):
    the same values, without the last layer's forward and its full weight read (measured on MobileNetV3-Large,
    the compiled head gradient alone 0.56 -> 0.39 ms). Nodes whose shapes are not known are left alone."""
    aten = torch.ops.aten

    def shape(node: object) -> tuple[int, ...] | None:
        val = getattr(node, "meta", {}).get("val")
        return tuple(val.shape) if isinstance(val, Tensor) else None

    for n in list(graph.nodes):
        if n.op != "call_function":
            continue
        if n.target == aten.ones_like.default and shape(n.args[0]) == ():  # the seed of a scalar score
            val = n.args[0].meta["val"]
            with graph.inserting_before(n):
                ones = graph.call_function(aten.full.default, ([], 1.0), {"dtype": val.dtype,
                                                                         "device": val.device})
            ones.meta.update(n.meta)
            n.replace_all_uses_with(ones)
            graph.erase_node(n)
        elif n.target == aten.mm.default:
            onehot, weight = n.args
            if getattr(onehot, "target", None) != aten.scatter_add.default:
                continue
            zeros, dim, index, src = onehot.args
            n_rows = (shape(onehot) or (-1,))[0]
            if (getattr(zeros, "target", None) != aten.new_zeros.default or dim != 1
                    or shape(index) != (n_rows, 1) or shape(src) != (n_rows, 1)):
                continue
            with graph.inserting_before(n):
                flat = graph.call_function(aten.view.default, (index, [-1]))
                picked = graph.call_function(aten.index_select.default, (weight, 0, flat))
                out = graph.call_function(aten.mul.Tensor, (picked, src))
            n.replace_all_uses_with(out)
            graph.erase_node(n)


def build_package(
    graph: ExplainGraph,
    example: Tensor,
    path: Path,
    freezing: bool = True,
    export_lock: AbstractContextManager | None = None,
    threads: int | None = None,
) -> Path:
    """Export ``graph`` for inputs shaped like ``example`` and compile it with AOTInductor into ``path``
    (a ``.pt2`` file, weights included). Raises whatever the exporter or the C++ compiler raises.

    ``export_lock`` is held while ``torch.export`` traces (it patches module calls process-wide, so no other
    thread may run a model meanwhile); the longer C++ compile runs without it.

    ``threads``: torch's thread count while Inductor generates code (default ``os.cpu_count()``): it decides
    which kernels get a parallel region; their teams are sized at run time by the caller (see
    :func:`build_configs`)."""
    target = torch.full((example.shape[0],), -1, dtype=torch.long, device=example.device)
    graph.eval()
    with export_lock or contextlib.nullcontext():
        if graph.needs_head_grad:
            graph.trace_head(example)
        with torch.inference_mode():
            ep = torch.export.export(graph, (example, target), strict=False)
    from torch._inductor import aoti_compile_and_package

    # Inductor freezes (folds batch norms into the weights, prepacks oneDNN convolutions with their fused
    # activations, folds constants) only when gradients are off: without no_grad, `freezing` was ignored and
    # every convolution ran as an aten call followed by a separate batch-norm kernel (docs/graph-cost.md)
    with torch.no_grad(), _codegen_threads(threads or os.cpu_count() or 1):
        out = aoti_compile_and_package(ep, package_path=str(path), inductor_configs=build_configs(freezing))
    return Path(out)


def build_configs(freezing: bool = True) -> dict[str, object]:
    """The Inductor settings of a build: those of a plain ``torch.compile`` with freezing. The OpenMP teams
    are sized at run time by the calling thread (``torch.set_num_threads``: a stream's budget) because the
    build runs with torch's thread count equal to the machine's cores (:func:`_codegen_threads`), the case in
    which Inductor writes ``#pragma omp parallel`` without a fixed size, as for ``torch.compile``. Not
    ``cpp.dynamic_threads``: it also opens a team for every kernel, however small (docs/graph-cost.md).
    ``cpp.weight_prepack`` off: prepacked convolution weights are laid out for the build's thread count, and a
    stream with another budget paid a reorder of every weight per call (ResNet-50 1.8x); without prepacking
    the batch norms are still folded and the cost is 1-2 % (measured, docs/graph-cost.md)."""
    return {"freezing": freezing, "cpp.weight_prepack": False}


@contextlib.contextmanager
def _codegen_threads(threads: int):
    """torch's thread count set to ``threads`` while Inductor compiles (the code generator decides which loops
    are worth a parallel region for that many threads and writes an unsized ``#pragma omp parallel`` when it
    equals ``os.cpu_count()``), restored afterwards: the child build runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_package(
    path: Path, runners: int = 1, device: str = "cpu"
) -> Callable[[Tensor, Tensor], GraphOutput]:
    """Load a package written by :func:`build_package`: a callable ``(x, target) -> GraphOutput``, safe to
    call from ``runners`` threads at once, in parallel (more callers wait for a free runner).

    A package of one shared library with its weights inside (what :func:`build_package` writes on the CPU) is
    called through :class:`ParallelRunner`, which releases the GIL; anything else goes through the package's
    C++ loader (``torch._C._aoti.AOTIModelPackageLoader``, which holds the GIL for the whole call: measured,
    concurrent calls then run one at a time and every other Python thread of the process waits). Neither
    imports ``torch._inductor`` (seconds of start-up: it imports ``torch._dynamo``)."""
    runner: Callable[..., Sequence[Tensor]]
    try:
        if torch.device(device).type != "cpu":
            raise _NotPlain(device)
        runner = ParallelRunner(path, runners)
    except _NotPlain:
        runner = _torch_loader(path, runners)

    def run(x: Tensor, target: Tensor) -> GraphOutput:
        out = runner(x, target)
        return GraphOutput(*out[:5], tuple(out[5:]))

    run.runner = runner  # type: ignore[attr-defined]  # ParallelRunner: close(), peak
    return run


def _torch_loader(path: Path, runners: int) -> Callable[..., Sequence[Tensor]]:
    """torch's loader of the package, called with flat tensors; the public, slower-to-import path only on a
    torch without the C++ loader binding."""
    loader_cls = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_cls is None:
        from torch._inductor.package import load_package as aoti_load

        aoti = aoti_load(str(path), num_runners=runners)
        return lambda *inputs: list(aoti(*inputs))
    loader = loader_cls(str(path), "model", False, runners, -1)
    return lambda *inputs: loader.boxed_run(list(inputs))


class _NotPlain(Exception):
    """The package is not one CPU shared library with its weights inside: use torch's loader."""


class ParallelRunner:
    """An AOTInductor package's model container called through its C interface, without the GIL.

    torch's loader (``aoti_load_package``, ``AOTIModelPackageLoader.boxed_run``) keeps the GIL for the whole
    call, so N inference streams on the compiled engine ran one at a time, and the capture and render threads
    of the pipeline stalled for every forward pass. This runner extracts the package's shared library into a
    private temporary folder (0700, removed once loaded), opens it with :mod:`ctypes` (which releases the GIL
    during a foreign call) and creates the container with ``runners`` model instances (they share the
    weights), so that many threads run the graph at once. Tensors cross as AtenTensorHandles
    (``torch._C._aoti``), exactly as torch's runner does.

    The package must come from a verified cache entry: the library is code and is loaded into this process.
    Raises :class:`_NotPlain` for a package it cannot run this way (the caller uses torch's loader).
    """

    def __init__(self, path: Path, runners: int = 1) -> None:
        if runners < 1:
            raise ValueError(f"runners must be at least 1, got {runners}")
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if "/data/aotinductor/" in f"/{n}"]
            libs = [n for n in names if n.endswith(".so")]
            other = [n for n in names if not n.endswith((".so", ".cpp", ".json", ".h"))]
            if len(libs) != 1 or other or os.name != "posix":
                raise _NotPlain(f"{len(libs)} libraries, {len(other)} other files")
            folder = tempfile.mkdtemp(prefix="rtsal-graph-")  # 0700
            try:
                lib_path = os.path.join(folder, "graph.so")
                with z.open(libs[0]) as src, open(lib_path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                try:
                    self._lib = ctypes.CDLL(lib_path)
                except OSError as exc:
                    raise _NotPlain(str(exc)) from None
            finally:
                shutil.rmtree(folder, ignore_errors=True)  # the mapping stays valid once loaded
        lib = self._lib
        try:
            create = lib.AOTInductorModelContainerCreateWithDevice
            self._run = lib.AOTInductorModelContainerRun
            self._delete = lib.AOTInductorModelContainerDelete
            num_outputs = lib.AOTInductorModelContainerGetNumOutputs
        except AttributeError as exc:
            raise _NotPlain(str(exc)) from None
        vp, size_t = ctypes.c_void_p, ctypes.c_size_t
        create.argtypes, create.restype = [ctypes.POINTER(vp), size_t, ctypes.c_char_p, ctypes.c_char_p], \
            ctypes.c_int32
        self._run.argtypes = [vp, ctypes.POINTER(vp), size_t, ctypes.POINTER(vp), size_t, vp, vp]
        self._run.restype = ctypes.c_int32
        self._delete.argtypes, self._delete.restype = [vp], ctypes.c_int32
        num_outputs.argtypes, num_outputs.restype = [vp, ctypes.POINTER(size_t)], ctypes.c_int32
        self._handle = vp()
        if create(ctypes.byref(self._handle), runners, b"cpu", None) != 0:
            raise RuntimeError("the compiled graph's container could not be created")
        n = size_t()
        if num_outputs(self._handle, ctypes.byref(n)) != 0:
            self.close()
            raise RuntimeError("the compiled graph's output count could not be read")
        self.runners = runners
        self.num_outputs = n.value
        self._cond = threading.Condition()
        self._active = 0  # calls inside the container now
        self.peak = 0  # the most calls that were inside at once (tests, benchmarks)

    def __call__(self, *inputs: Tensor) -> list[Tensor]:
        """Run the graph on ``inputs`` (dense tensors laid out as at build time); the GIL is released
        meanwhile. The calling thread's ``torch.set_num_threads`` budget sizes every parallel kernel."""
        torch.get_num_threads()  # applies torch's thread count to this thread's OpenMP settings (torch: lazy)
        handles = [_pointer(c) for c in _aoti().unsafe_alloc_void_ptrs_from_tensors(list(inputs))]
        ins = (ctypes.c_void_p * len(handles))(*handles)
        outs = (ctypes.c_void_p * self.num_outputs)()
        with self._cond:
            if not self._handle:
                _aoti().alloc_tensors_by_stealing_from_void_ptrs([_capsule(p) for p in handles])  # free them
                raise RuntimeError("this compiled graph is closed")
            self._active += 1
            self.peak = max(self.peak, self._active)
        try:
            rc = self._run(self._handle, ins, len(handles), outs, self.num_outputs, None, None)  # steals ins
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()
        if rc != 0:
            raise RuntimeError("the compiled graph failed (see stderr)")
        return _aoti().alloc_tensors_by_stealing_from_void_ptrs([_capsule(p) for p in outs])

    def close(self) -> None:
        """Delete the container once the calls inside it have returned; later calls raise RuntimeError."""
        with self._cond:
            handle, self._handle = self._handle, ctypes.c_void_p()
            self._cond.wait_for(lambda: self._active == 0)
            if handle:
                self._delete(handle)


def _aoti():
    return torch._C._aoti


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype, _get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def _pointer(capsule: object) -> int:
    return _get_pointer(capsule, None)


def _capsule(pointer: int | None) -> object:
    return _new_capsule(pointer, None, None)
