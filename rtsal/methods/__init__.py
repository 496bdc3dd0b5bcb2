"""The method registry: every saliency method rtsal can run, with its cost class (torch-free, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

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

ENGINE_METHODS = tuple(name for name, info in METHODS.items() if info.engine)
CAMS = ("gradcampp", "gradcam")
NORMS = ("gauss", "gamma", "range")
STATISTICS = ("smoe", "mean", "std", "max", "entropy")
WEIGHT_PRESETS = ("equal", "linear", "prior")
