"""What every comparison method shares: the runner interface, a hook on one layer call, targets, results.

A *runner* is a context manager with ``explain(images, target=None) -> SaliencyResult`` and a ``cost``
string (one of :data:`rtsal.names.COSTS`). Engine methods run on the
:class:`~rtsal.engine.explainer.Explainer`
itself (:class:`EngineRunner`); the slower comparison methods (:class:`MethodRunner` subclasses) run their
own passes on the explainer's model, with the engine's hooks taken off the model while they do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.explainer import OutputSize, prepare_input
from rtsal.engine.hooks import HookOwner
from rtsal.engine.probe import parse_layer
from rtsal.engine.saliency.combine import upsample
from rtsal.engine.saliency.norm import range_norm
from rtsal.errors import UsageError
from rtsal.names import METHODS
from rtsal.types import LayerInfo, SaliencyResult, TopK

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer

Images = np.ndarray | Tensor | Sequence[np.ndarray]
Target = int | Sequence[int] | Tensor | None


def resolve_layer(model: nn.Module, layer: str | LayerInfo | None, default: LayerInfo) -> LayerInfo:
    """``None`` -> ``default``; ``"NAME"`` or ``"NAME#CALL"`` -> a :class:`LayerInfo` of ``model``."""
    if layer is None:
        return default
    if isinstance(layer, LayerInfo):
        name, call = layer.name, layer.call
    else:
        name, call = parse_layer(layer)
    if not name or name not in dict(model.named_modules()):
        raise UsageError(f"no module named {name!r} in the model (see `rtsal layers MODEL`)")
    return LayerInfo(name, call)


class LayerTap(HookOwner):
    """Context manager: a forward hook on one call of one module, removed on exit (also on error).

    On that call, ``fn(output)`` runs; whatever it returns (a tensor or None) replaces the output as a
    forward hook's return value does. Calls are counted from the start of each forward pass of ``model``.
    """

    def __init__(self, model: nn.Module, layer: LayerInfo, fn: Callable[[Tensor], Tensor | None]) -> None:
        modules = dict(model.named_modules())
        if layer.name not in modules:
            raise UsageError(f"no module named {layer.name!r} in the model")
        super().__init__()
        self.model, self.module, self.layer, self.fn = model, modules[layer.name], layer, fn
        self.calls = 0
        self.fired = 0

    def attach(self) -> None:
        self.pre_hook(self.model, self._reset)
        self.hook(self.module, self._hook)

    def _reset(self, module: nn.Module, args: object) -> None:
        self.calls = 0

    def _hook(self, module: nn.Module, args: object, out: Tensor) -> Tensor | None:
        call, self.calls = self.calls, self.calls + 1
        if call != self.layer.call:
            return None
        if not isinstance(out, Tensor) or out.dim() not in (3, 4, 5):  # 3: ViT tokens, 5: clips
            raise UsageError(f"layer {self.layer} does not output an (N, C, H, W) tensor")
        self.fired += 1
        return self.fn(out)


def record(model: nn.Module, layer: LayerInfo, keep: list[Tensor], clone: bool = False) -> LayerTap:
    """A tap that appends the layer's output to ``keep``; with ``clone`` the model goes on with a copy, so
    in-place operations after the layer leave the recorded tensor (and its autograd history) intact."""

    def fn(out: Tensor) -> Tensor | None:
        keep.append(out)
        return out.clone() if clone else None

    return LayerTap(model, layer, fn)


@contextmanager
def engine_hooks_off(explainer: Explainer) -> Iterator[None]:
    """Take the explainer's recording hooks off its model for the duration (they switch grad mode on and
    record every pass, which the comparison methods' own passes must not trigger); put them back after."""
    recorder = explainer._recorder
    if not recorder.attached:
        raise RuntimeError("this Explainer is closed")
    recorder.close()
    try:
        yield
    finally:
        recorder.__enter__()


def top_classes(logits: Tensor, k: int, class_names: Sequence[str]) -> TopK:
    """Softmax top-k of (N, classes) logits with their names."""
    probs = torch.softmax(logits.detach().float(), dim=1)
    top_p, top_i = probs.topk(min(k, probs.shape[1]), dim=1)
    labels = [[class_names[i] for i in row] for row in top_i.tolist()]
    return TopK(top_i, top_p, labels)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Runner:
    """Explains images with one method. A context manager; closes the explainer on exit only if it owns it.

    Attributes not defined here (``model``, ``layers``, ``class_names``, ``preprocess``, ...) are the
    explainer's.
    """

    def __init__(self, explainer: Explainer, method: str, *, close_explainer: bool = False) -> None:
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
        self.explainer = explainer
        self.method = method
        self.cost = METHODS[method].cost
        self.close_explainer = close_explainer

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the explainer if this runner owns it; otherwise leave it open for its owner."""
        if self.close_explainer:
            self.explainer.close()

    def __getattr__(self, name: str) -> Any:
        if name == "explainer":  # not set yet: avoid recursion during construction
            raise AttributeError(name)
        return getattr(self.explainer, name)

    @property
    def passes(self) -> str:
        """What one image costs, in passes through the model."""
        return "1 fwd"

    def explain(self, images: Images, target: Target = None, *, size: OutputSize = None) -> SaliencyResult:
        """Explain a batch; ``size`` as in :meth:`Explainer.explain` (None: the images' size)."""
        raise NotImplementedError


class EngineRunner(Runner):
    """An engine method (``fastcam``, ``smoe``, ``gradcam``, ...) on the explainer's one forward pass."""

    def __init__(self, explainer: Explainer, method: str, *, close_explainer: bool = False) -> None:
        super().__init__(explainer, method, close_explainer=close_explainer)
        if METHODS[method].engine is False:
            raise UsageError(f"{method!r} is not an engine method")

    @property
    def passes(self) -> str:
        return "1 fwd" if self.explainer.closed_form else "1 fwd + head bwd"

    def explain(self, images: Images, target: Target = None, *, size: OutputSize = None) -> SaliencyResult:
        return self.explainer.explain(images, target, size=size, method=self.method)


@dataclass(frozen=True)
class MethodOutput:
    """What a comparison method computes for a batch: logits (N, classes), target (N,), and a raw map
    (N, h, w) at any resolution (the layer's or the model input's), not yet normalised."""

    logits: Tensor
    target: Tensor
    raw: Tensor
    forward_ms: float  # the first forward pass, the one that gives the logits


class MethodRunner(Runner):
    """A comparison method at one layer of the explainer's model (default: its last scale-end layer).

    Subclasses implement :meth:`compute`; this class preprocesses, takes the engine hooks off, upsamples
    the raw map to the image size and normalises it to [0, 1] (:meth:`normalise`), and builds the result.
    """

    def __init__(
        self,
        explainer: Explainer,
        method: str,
        *,
        layer: str | LayerInfo | None = None,
        batch_size: int = 32,
        close_explainer: bool = False,
    ) -> None:
        super().__init__(explainer, method, close_explainer=close_explainer)
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        last = explainer.layers[-1]
        self.layer = resolve_layer(explainer.model, layer, LayerInfo(last.name, last.call))
        self.batch_size = batch_size
        self.layer_shape: tuple[int, int, int] | None = None  # (C, h, w) seen in the last call

    def compute(self, x: Tensor, target: Target) -> MethodOutput:
        """The method on a preprocessed batch (N, 3, h, w)."""
        raise NotImplementedError

    def normalise(self, maps: Tensor) -> Tensor:
        """(N, H, W) -> [0, 1] per image. Min-max by default."""
        return range_norm(maps)

    def first_forward(self, x: Tensor, *taps: LayerTap, grad: bool = False) -> tuple[Tensor, float]:
        """The pass that gives the logits, with ``taps`` on; timed. -> (logits (N, classes), ms)."""
        t0 = _now(x.device)
        with _all(taps), torch.enable_grad() if grad else torch.inference_mode():
            logits = self.explainer.model(x)
        ms = (_now(x.device) - t0) * 1e3
        for tap in taps:
            if tap.fired == 0:
                raise UsageError(f"layer {tap.layer} produced no output in the forward pass")
        return logits, ms

    def explain(self, images: Images, target: Target = None, *, size: OutputSize = None) -> SaliencyResult:
        """Explain a batch as :meth:`Explainer.explain` does; ``saliency`` is this method's map."""
        e = self.explainer
        t0 = _now(e.device)
        x, out_size = prepare_input(e, images, size)
        t1 = _now(e.device)
        with engine_hooks_off(e):
            out = self.compute(x, target)
        with torch.inference_mode():
            saliency = self.normalise(upsample(out.raw.detach().float(), out_size)).clamp_(0.0, 1.0)
            topk = top_classes(out.logits, e.topk, e.class_names)
        t2 = _now(e.device)
        total = (t2 - t0) * 1e3
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "forward": out.forward_ms,
            "saliency": (t2 - t1) * 1e3 - out.forward_ms,
            "total": total,
        }
        return SaliencyResult(
            logits=out.logits.detach(),
            topk=topk,
            target=out.target,
            saliency=saliency,
            method=self.method,
            layers=(self.layer.label,),
            timings=timings,
        )


@contextmanager
def _all(taps: Sequence[LayerTap]) -> Iterator[None]:
    entered: list[LayerTap] = []
    try:
        for tap in taps:
            entered.append(tap.__enter__())
        yield
    finally:
        for tap in reversed(entered):
            tap.close()


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)`` in steps of ``size``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)
