"""The rows of ``rtsal eval``: ``NAME[/OPTION...]`` method specs (torch-free).

A row is an engine method with its settings (``fastcam/gradcam``, ``smoe/linear``, ``smoe/gamma``,
``smoe/entropy``, ...), a comparison method of :mod:`rtsal.methods`, or a reference map (``random``,
``centre``). Names come from :mod:`rtsal.names`; ``default``, ``engine`` and ``all`` expand to lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtsal.errors import UsageError
from rtsal.names import CAMS, ENGINE_METHODS, METHODS, NORMS, STATISTICS, WEIGHT_PRESETS

__all__ = [
    "BASELINES",
    "DEFAULT_METHODS",
    "DEFAULTS",
    "ENGINE_VARIANTS",
    "MODIFIERS",
    "MethodSpec",
    "parse_method",
    "parse_methods",
]

BASELINES = ("random", "centre")  # reference maps that need no model: always rows of the table
# option value -> the setting it changes (the values are unique across settings)
MODIFIERS = {
    **dict.fromkeys(CAMS, "cam"),
    **dict.fromkeys(NORMS, "norm"),
    **dict.fromkeys(WEIGHT_PRESETS, "weights"),
    **dict.fromkeys(STATISTICS, "statistic"),
}
DEFAULTS = {"cam": "gradcampp", "norm": "gauss", "weights": "equal", "statistic": "smoe"}
USES = {  # which settings change each engine method's map
    "fastcam": ("cam", "norm", "weights", "statistic"),
    "nonclass": ("cam", "norm", "weights", "statistic"),
    "smoe": ("norm", "weights", "statistic"),
    "gradcam": (),
    "gradcampp": (),
}
ENGINE_VARIANTS = (
    "fastcam",
    "fastcam/gradcam",
    "gradcampp",
    "gradcam",
    "nonclass",
    "smoe",
    "smoe/linear",
    "smoe/prior",
    "smoe/gamma",
    "smoe/range",
    "smoe/mean",
    "smoe/std",
    "smoe/max",
    "smoe/entropy",
)
DEFAULT_METHODS = ("fastcam", "fastcam/gradcam", "gradcampp", "gradcam", "smoe")


@dataclass(frozen=True)
class MethodSpec:
    """One row of the table: an engine method with its settings, a comparison method, or a baseline."""

    label: str
    kind: str  # "engine" | "comparison" | "baseline"
    method: str
    cam: str = "gradcampp"
    norm: str = "gauss"
    weights: str = "equal"
    statistic: str = "smoe"

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Engine settings: methods sharing them come from one Explainer pass."""
        return (self.cam, self.norm, self.weights, self.statistic)


def parse_method(text: str) -> MethodSpec:
    """``NAME[/OPTION...]`` -> MethodSpec, with a canonical label (default settings left out)."""
    name, *mods = [part.strip() for part in text.strip().split("/")]
    if name in BASELINES:
        if mods:
            raise UsageError(f"method {text!r}: the {name} baseline takes no options")
        return MethodSpec(name, "baseline", name)
    if name in ENGINE_METHODS:
        settings = dict(DEFAULTS)
        if name in CAMS:
            settings["cam"] = name
        for mod in mods:
            key = MODIFIERS.get(mod)
            if key is None:
                raise UsageError(
                    f"method {text!r}: unknown option {mod!r}: choose from {', '.join(MODIFIERS)}"
                )
            if key not in USES.get(name, ()):
                raise UsageError(f"method {text!r}: {key} {mod!r} does not change the {name} map")
            settings[key] = mod
        label = "/".join([name] + [settings[k] for k in USES.get(name, ()) if settings[k] != DEFAULTS[k]])
        return MethodSpec(label, "engine", name, **settings)
    if name in METHODS:
        if mods:
            raise UsageError(f"method {text!r}: options apply to engine methods only")
        return MethodSpec(name, "comparison", name)
    known = ", ".join([*METHODS, *BASELINES, "default", "engine", "all"])
    raise UsageError(f"unknown method {name!r}: choose from {known}")


def parse_methods(text: str) -> list[MethodSpec]:
    """Comma-separated names (``default``, ``engine``, ``all`` expand) -> specs; baselines last, once each."""
    comparison = tuple(n for n, info in METHODS.items() if not info.engine)
    expand = {"default": DEFAULT_METHODS, "engine": ENGINE_VARIANTS, "all": ENGINE_VARIANTS + comparison}
    specs: dict[str, MethodSpec] = {}
    for item in (t for t in text.split(",") if t.strip()):
        for one in expand.get(item.strip(), (item,)):
            spec = parse_method(one)
            specs.setdefault(spec.label, spec)
    if not specs:
        raise UsageError("--methods: give at least one method")
    rows = [s for s in specs.values() if s.kind != "baseline"]
    return rows + [parse_method(b) for b in BASELINES]
