"""The method registry: every saliency method rtsal can run, with its cost class (torch-free, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COSTS = ("forward only", "+head backward", "+full backward", "N forwards")


@dataclass(frozen=True)
class MethodInfo:
    """A saliency method: its name, what it costs per frame and whether the engine computes it in one pass."""

    name: str
    cost: str  # one of COSTS
    summary: str
    engine: bool = True  # computed by rtsal.Explainer from the one forward pass


METHODS: dict[str, MethodInfo] = {}


def register_method(info: MethodInfo) -> MethodInfo:
    """Add a method; a name can be registered once."""
    if info.name in METHODS:
        raise ValueError(f"method {info.name!r} is already registered")
    if info.cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {info.cost!r}")
    METHODS[info.name] = info
    return info


register_method(MethodInfo("fastcam", "forward only", "SMOE Scale maps x Grad-CAM++ from the head (FastCAM)"))
register_method(MethodInfo("smoe", "forward only", "combined SMOE Scale maps, class-agnostic"))
register_method(
    MethodInfo("nonclass", "forward only", "SMOE x (1 - CAM): salient but not the class decision")
)
register_method(
    MethodInfo("gradcam", "forward only", "Grad-CAM from the head (closed form or head-only backward)")
)
register_method(
    MethodInfo("gradcampp", "forward only", "Grad-CAM++ from the head (closed form or head-only backward)")
)

for _name, _cost, _summary in (
    ("gradcam-full", "+full backward", "Grad-CAM with a full backward pass to the input"),
    ("gradcampp-full", "+full backward", "Grad-CAM++ with a full backward pass to the input"),
    ("scorecam", "N forwards", "Score-CAM: one forward per channel mask, K strongest channels (--cskip)"),
    ("ablationcam", "N forwards", "Ablation-CAM: zero one channel at a time, weight it by the score drop"),
    ("fastablationcam", "N forwards", "zero the channel column at each location; map = drop of the score"),
    (
        "guided-backprop",
        "+full backward",
        "Guided Backprop: input gradient, only positive gradients pass ReLUs",
    ),
    ("guided-gradcam", "+full backward", "Guided Backprop x Grad-CAM"),
):
    register_method(MethodInfo(_name, _cost, _summary, engine=False))

ENGINE_METHODS = tuple(name for name, info in METHODS.items() if info.engine)
CAMS = ("gradcampp", "gradcam")
NORMS = ("gauss", "gamma", "range")
STATISTICS = ("smoe", "mean", "std", "max", "entropy")
WEIGHT_PRESETS = ("equal", "linear", "prior")


def build_runner(
    name: str,
    explainer: Any,
    *,
    layer: str | None = None,
    cskip: int = 16,
    batch_size: int | None = None,
    close_explainer: bool | None = None,
    **explainer_options: Any,
) -> Any:
    """A runner for method ``name``: a context manager with ``explain(images, target=None) -> SaliencyResult``
    and a ``cost`` string. ``explainer`` is an ``Explainer`` or a model name / ``nn.Module`` (then built with
    ``explainer_options`` and closed with the runner). ``layer`` (``NAME`` or ``NAME#CALL``, default the last
    scale-end layer), ``cskip`` (Score-CAM channels, 0 = all) and ``batch_size`` apply to the comparison
    methods. Imports torch; see :func:`rtsal.methods.runner.build_runner`.
    """
    from rtsal.methods.runner import build_runner as build

    return build(
        name,
        explainer,
        layer=layer,
        cskip=cskip,
        batch_size=batch_size,
        close_explainer=close_explainer,
        **explainer_options,
    )
