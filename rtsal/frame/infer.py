"""The infer stage: frames -> saliency results at model resolution, for any method."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rtsal.locks import SharedExclusiveLock
from rtsal.names import ENGINE_METHODS, METHODS

if TYPE_CHECKING:
    from rtsal.types import Frame, SaliencyResult

__all__ = ["FrameExplainer", "FrameResult", "Runner"]


class Runner(Protocol):
    """What explains a batch of images with one method (:class:`rtsal.engine.explainer.Explainer`, the
    runners of :func:`rtsal.methods.build_runner`, the ONNX Runtime backend)."""

    cost: str

    def explain(self, images: Any, target: Any = None, *, size: Any = None) -> SaliencyResult: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FrameResult:
    """Frame ``i`` of a batch explained together. ``timings`` are the batch's milliseconds per frame;
    ``batch`` is how many frames shared the forward pass; ``method`` is the method that ran."""

    result: SaliencyResult  # the whole batch's result
    i: int
    timings: dict[str, float]
    batch: int
    method: str
    window: tuple[int, int] | None = None  # clip models: first and last frame index of the clip explained


class FrameExplainer:
    """Explains frames with the current method, keeping maps at model resolution (the render stage resizes
    only the maps its view draws). Switching method (:meth:`set_method`) builds the new method's runner
    once, on the same model: no model is reloaded. ``target`` pins the class the CAM explains (None: top-1).

    ``runner`` is owned: :meth:`close` closes it and every runner built here.

    Thread-safe for the pipeline's inference streams: the engine methods (one forward pass, hooks that
    record per thread) run concurrently on the one model; a comparison method (its own passes, shared
    state, and it takes the engine's hooks off the model while it runs) runs alone: no other call, of any
    method, runs beside it (a method switch while streams are busy is safe).
    """

    def __init__(
        self,
        runner: Runner,
        method: str,
        *,
        target: int | None = None,
        layer: str | None = None,
        cskip: int = 16,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        self.runner = runner
        self.method = method
        self.target = target
        self._layer = layer
        self._cskip = cskip
        self._runners: dict[str, Runner] = {method: runner}
        self._build_lock = threading.Lock()
        self._model_use = SharedExclusiveLock()  # engine calls share the model; a comparison method owns it

    @property
    def class_names(self) -> Sequence[str]:
        return tuple(getattr(self.runner, "class_names", ()) or ())

    @property
    def cost(self) -> str:
        return METHODS[self.method].cost

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this explainer can switch to: every method on rtsal's engine, the engine methods only
        on another backend (an ONNX Runtime export has no backward pass to offer)."""
        from rtsal.engine.explainer import Explainer

        if isinstance(getattr(self.runner, "explainer", self.runner), Explainer):
            return tuple(METHODS)
        return ENGINE_METHODS

    def set_method(self, method: str) -> None:
        """Explain the next frames with ``method`` (hotkey m)."""
        self.prepare(method)
        self.method = method

    def prepare(self, method: str) -> None:
        """Build ``method``'s runner (once) without switching to it: calls that name it run at once."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        with self._build_lock:
            if method not in self._runners:
                from rtsal.methods import build_runner

                explainer = getattr(self.runner, "explainer", self.runner)
                self._runners[method] = build_runner(
                    method, explainer, layer=self._layer, cskip=self._cskip, close_explainer=False
                )

    sequential = False  # True: calls carry state from frame to frame (one stream, frames in order)

    def reset(self) -> None:
        """Forget what belongs to the previous video (nothing here; a clip model's window of frames)."""

    def explain(self, images: Any, method: str | None = None) -> SaliencyResult:
        """RGB uint8 (H, W, 3) or (N, H, W, 3) -> the result of ``method`` (default: the current one), maps at
        model resolution."""
        method = method or self.method
        if method not in self._runners:
            self.prepare(method)
        runner = self._runners[method]
        with self._model_use.hold(exclusive=not METHODS[method].engine):
            return runner.explain(images, self.target, size="model")

    def __call__(self, frames: Sequence[Frame], method: str | None = None) -> list[FrameResult]:
        """The pipeline's infer stage: a batch of frames -> one :class:`FrameResult` per frame, explained with
        ``method`` (default: the current one; naming one does not switch, so each caller may pick its own)."""
        import numpy as np

        method = method or self.method
        t0 = time.perf_counter()
        images = frames[0].image if len(frames) == 1 else np.stack([f.image for f in frames])
        stacked = (time.perf_counter() - t0) * 1e3
        result = self.explain(images, method)
        n = len(frames)
        timings = dict(result.timings)
        timings["preprocess"] = timings.get("preprocess", 0.0) + stacked
        per_frame = {k: v / n for k, v in timings.items()}
        return [FrameResult(result, i, per_frame, n, method) for i in range(n)]

    def close(self) -> None:
        """Close the runners built here, then the one given (which owns the model)."""
        try:
            for runner in self._runners.values():
                if runner is not self.runner:
                    runner.close()
        finally:
            self.runner.close()

    def __enter__(self) -> FrameExplainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
