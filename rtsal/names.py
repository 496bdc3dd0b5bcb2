"""The one source of truth for every name a user can type: methods with their cost class, views, colour maps,
norms, channel statistics, CAM variants and scale-weight presets.

Torch-free, so the CLI builds its ``choices`` from here without importing the engine, and the engine, the
methods and the render layer all read the same lists (see docs/design.md, "Names").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CAMS",
    "CMAPS",
    "COSTS",
    "ENGINE_METHODS",
    "METHODS",
    "MethodInfo",
    "NORMS",
    "STATISTICS",
    "SUBSTRATES",
    "VIEWS",
    "VIEW_FIELDS",
    "WEIGHT_PRESETS",
    "register_method",
]

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


for _name, _cost, _summary, _engine in (
    ("fastcam", "forward only", "SMOE Scale maps x Grad-CAM++ from the head (FastCAM)", True),
    ("smoe", "forward only", "combined SMOE Scale maps, class-agnostic", True),
    ("nonclass", "forward only", "SMOE x (1 - CAM): salient but not the class decision", True),
    ("gradcam", "forward only", "Grad-CAM from the head (closed form or head-only backward)", True),
    ("gradcampp", "forward only", "Grad-CAM++ from the head (closed form or head-only backward)", True),
    ("gradcam-full", "+full backward", "Grad-CAM with a full backward pass to the input", False),
    ("gradcampp-full", "+full backward", "Grad-CAM++ with a full backward pass to the input", False),
    (
        "scorecam",
        "N forwards",
        "Score-CAM: one forward per channel mask, K strongest channels (--cskip)",
        False,
    ),
    (
        "ablationcam",
        "N forwards",
        "Ablation-CAM: zero one channel at a time, weight it by the score drop",
        False,
    ),
    (
        "fastablationcam",
        "N forwards",
        "zero the channel column at each location; map = drop of the score",
        False,
    ),
    (
        "guided-backprop",
        "+full backward",
        "Guided Backprop: input gradient, only positive gradients pass ReLUs",
        False,
    ),
    ("guided-gradcam", "+full backward", "Guided Backprop x Grad-CAM", False),
):
    register_method(MethodInfo(_name, _cost, _summary, engine=_engine))

ENGINE_METHODS = tuple(name for name, info in METHODS.items() if info.engine)
CAMS = ("gradcampp", "gradcam")
NORMS = ("gauss", "gamma", "range")
STATISTICS = ("smoe", "mean", "std", "max", "entropy")
WEIGHT_PRESETS = ("equal", "linear", "prior")
# what `rtsal eval` replaces removed pixels by (deletion/insertion substrates, --baseline)
SUBSTRATES = ("blur", "black", "mean", "noise")
CMAPS = ("jet", "turbo", "inferno", "magma", "viridis", "plasma", "hot", "bone")

# Each view and the result maps it draws: only those are smoothed, copied to the host and resized.
VIEW_FIELDS: dict[str, tuple[str, ...]] = {
    "overlay": ("saliency",),
    "lovi": ("saliency", "scales"),
    "layers": ("saliency", "scales", "smoe", "cam"),
    "side": ("saliency",),
    "map": ("saliency",),
}
VIEWS = tuple(VIEW_FIELDS)
