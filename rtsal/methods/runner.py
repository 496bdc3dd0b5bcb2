"""``build_runner``: the object that explains images with any registered method."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtsal.errors import UsageError
from rtsal.methods.ablationcam import AblationCAM
from rtsal.methods.base import EngineRunner, MethodRunner, Runner
from rtsal.methods.fastablationcam import FastAblationCAM
from rtsal.methods.gradcam_full import GradCAMFull
from rtsal.methods.guided import GuidedBackprop, GuidedGradCAM
from rtsal.methods.scorecam import ScoreCAM
from rtsal.names import METHODS
from rtsal.types import LayerInfo

if TYPE_CHECKING:
    from torch import nn

    from rtsal.engine.explainer import Explainer

RUNNERS: dict[str, type[MethodRunner]] = {
    "gradcam-full": GradCAMFull,
    "gradcampp-full": GradCAMFull,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "fastablationcam": FastAblationCAM,
    "guided-backprop": GuidedBackprop,
    "guided-gradcam": GuidedGradCAM,
}


def build_runner(
    name: str,
    explainer: Explainer | nn.Module | str,
    *,
    layer: str | LayerInfo | None = None,
    cskip: int = 16,
    batch_size: int | None = None,
    close_explainer: bool | None = None,
    **explainer_options: Any,
) -> Runner:
    """A runner for method ``name``: a context manager with ``explain(images, target=None) -> SaliencyResult``
    (``saliency`` is the method's (N, H, W) map in [0, 1] at the images' size) and a ``cost`` string.

    Args:
        name: a method of :data:`rtsal.methods.METHODS`. Engine methods (``fastcam``, ``smoe``, ``gradcam``,
            ...) run on the explainer's one forward pass; the others run their own passes on its model.
        explainer: an :class:`~rtsal.engine.explainer.Explainer`, or a model name / ``nn.Module`` to build
            one from (with ``explainer_options``, e.g. ``weights=None, size=224``).
        layer: the layer the comparison methods work at, ``NAME`` or ``NAME#CALL``; default the explainer's
            last scale-end layer. Engine methods ignore it (they use the explainer's layers).
        cskip: Score-CAM keeps the ``cskip`` channels with the largest max activation; 0 keeps all.
        batch_size: masked or ablated copies per forward pass; default 32 (``scorecam``: 8 on a CPU, where
            larger batches of full-size inputs run slower per image; ``fastablationcam``: 64).
        close_explainer: close the explainer when the runner is closed; default: only if built here.
    """
    from rtsal.engine.explainer import Explainer

    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    from torch import nn

    if not isinstance(explainer, (Explainer, nn.Module, str)):
        # another engine behind the Explainer's interface (the ONNX Runtime backend, rtsal.deploy.runtime):
        # it computes the engine's maps in one run, and has no model for the comparison methods
        if not METHODS[name].engine or explainer_options:
            raise UsageError(f"{name!r} needs the torch backend: ONNX Runtime runs the engine methods only")
        return EngineRunner(explainer, name, close_explainer=bool(close_explainer))
    built = not isinstance(explainer, Explainer)
    if built:
        explainer = Explainer(explainer, **explainer_options)
    elif explainer_options:
        raise UsageError(f"explainer options {sorted(explainer_options)} need a model, not an Explainer")
    owns = built if close_explainer is None else close_explainer
    try:
        if METHODS[name].engine:
            return EngineRunner(explainer, name, close_explainer=owns)
        kwargs: dict[str, Any] = {"layer": layer, "close_explainer": owns}
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        if name == "scorecam":
            kwargs["cskip"] = cskip
        return RUNNERS[name](explainer, name, **kwargs)
    except BaseException:
        if built:
            explainer.close()
        raise
