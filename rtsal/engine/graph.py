"""The whole explanation as one graph: forward pass + every map, ready for ``torch.export`` and AOTInductor.

:class:`ExplainGraph` wraps a copy of the classifier whose scale-end outputs are recorded by its own
:class:`~rtsal.engine.hooks.ActivationRecorder` (hooks run as plain Python while ``torch.export`` traces, so
they end up inside the graph). Its forward returns logits, top-k probabilities and indices, the explained
class, the raw CAM and the normalised per-scale maps, each at its own resolution; the engine then upsamples,
combines and fuses them to the output size (``saliency.fastcam.fuse_maps``, OpenCV on the CPU), as the eager
engine does: measured, that resampling inside the graph cost more than the whole eager saliency step.

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
``.pt2`` package; :func:`load_package` loads it back as a callable ``(x, target) -> GraphOutput``.
"""

from __future__ import annotations

import contextlib
import copy
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
        out_size: (H, W) the maps are used at (part of the cache key; the graph returns them at their own
            resolutions and the engine upsamples them after the call).
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
        out_size: tuple[int, int] | None = None,
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
        self.out_size = out_size
        self.recorder = ActivationRecorder(model, layers)
        self.recorder.__enter__()

    def close(self) -> None:
        """Remove this graph's hooks from its model."""
        self.recorder.close()

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """``x`` (N, 3, h, w) preprocessed; ``target`` (N,) long, a negative entry means "the top-1 class".
        Returns the fields of :class:`GraphOutput` as a plain tuple (what the exporter serialises)."""
        logits = self.model(x)
        acts = self.recorder.pop()
        tgt = torch.where(target < 0, logits.argmax(dim=1), target)
        if self.head_weight is None:  # as the eager engine: the CAM of the raw tensor and its gradient
            if self.head_grad is None:
                raise RuntimeError("the head's gradient is not traced: call trace_head(example) first")
            cam_small = CAMS[self.cam](acts[-1], self.head_grad(acts[-1], tgt))
        else:
            last = torch.relu(acts[-1]) if self.cam_relu else acts[-1]
            cam_small = cam_from_linear_head(last, self.head_weight, tgt, self.cam)
        maps = scale_maps(acts, self.relu, self.statistic, self.norm)
        probs = torch.softmax(logits.float(), dim=1)
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
    ops do not keep it alive) and everything that does not lead to the gradient is removed. The result takes
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


def build_package(
    graph: ExplainGraph,
    example: Tensor,
    path: Path,
    freezing: bool = True,
    export_lock: AbstractContextManager | None = None,
) -> Path:
    """Export ``graph`` for inputs shaped like ``example`` and compile it with AOTInductor into ``path``
    (a ``.pt2`` file, weights included). Raises whatever the exporter or the C++ compiler raises.

    ``export_lock`` is held while ``torch.export`` traces (it patches module calls process-wide, so no other
    thread may run a model meanwhile); the longer C++ compile runs without it."""
    target = torch.full((example.shape[0],), -1, dtype=torch.long, device=example.device)
    graph.eval()
    with export_lock or contextlib.nullcontext():
        if graph.needs_head_grad:
            graph.trace_head(example)
        with torch.inference_mode():
            ep = torch.export.export(graph, (example, target), strict=False)
    from torch._inductor import aoti_compile_and_package

    out = aoti_compile_and_package(
        ep, package_path=str(path), inductor_configs={"freezing": freezing}
    )
    return Path(out)


def load_package(path: Path) -> Callable[[Tensor, Tensor], GraphOutput]:
    """Load a package written by :func:`build_package`: a callable ``(x, target) -> GraphOutput``.

    The package's C++ loader is used directly: ``torch._inductor.aoti_load_package`` wraps the same loader
    but importing ``torch._inductor`` costs seconds of start-up (it imports ``torch._dynamo``); the graph's
    inputs and outputs are flat tensors already."""
    loader_cls = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_cls is None:  # a torch without the C++ loader binding: the public, slower-to-import path
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(str(path))

        def call(x: Tensor, target: Tensor) -> list[Tensor]:
            return list(runner(x, target))
    else:
        loader = loader_cls(str(path), "model", False, 1, -1)

        def call(x: Tensor, target: Tensor) -> list[Tensor]:
            return loader.boxed_run([x, target])

    def run(x: Tensor, target: Tensor) -> GraphOutput:
        out = call(x, target)
        return GraphOutput(*out[:5], tuple(out[5:]))

    return run
