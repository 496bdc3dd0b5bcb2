"""The evaluation loop of ``rtsal eval``: maps of every method on every sample, then every measure.

1. One :class:`~rtsal.engine.explainer.Explainer` pass per sample finds the class to explain (the top-1 on
   the intact image) and preprocesses it; engine methods sharing settings come from one pass each, the
   comparison methods from :func:`rtsal.methods.build_runner`, the reference maps from
   :mod:`rtsal.eval.metrics`.
2. Per sample, all maps are scored together (:func:`rtsal.eval.metrics.score_maps`) against the chosen
   substrate; pointing where a box is known.
3. The summary: mean and 95% t-interval per method and measure, paired bootstrap differences between
   methods (:mod:`rtsal.eval.stats`), as a JSON-able dict that :mod:`rtsal.eval.report` prints and writes.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.engine.result import MAP_OF_METHOD
from rtsal.errors import UsageError, VideoIOError
from rtsal.eval.inputs import DATA, Sample
from rtsal.eval.methods import DEFAULTS, MethodSpec
from rtsal.eval.stats import mean_ci, paired_bootstrap

if TYPE_CHECKING:
    import torch

__all__ = [
    "HEADLINE",
    "MEASURES",
    "PAIRED",
    "EvalConfig",
    "comparison_maps",
    "config_baseline",
    "evaluate",
    "load_boxes",
    "summarise",
]

# every per-image measure, higher-is-better or not, as stored in the report
MEASURES = (
    "insertion",
    "deletion",
    "ins_minus_del",
    "n_insertion",
    "n_deletion",
    "n_ins_minus_del",
    "drop",
    "drop_abs",
    "increase",
    "pointing",
)
PAIRED = ("n_ins_minus_del", "ins_minus_del")  # the measures compared method against method
HEADLINE = "n_ins_minus_del"
FIELD = MAP_OF_METHOD


@dataclass(frozen=True)
class EvalConfig:
    """Everything that changes the numbers, recorded in the report's ``settings``."""

    model: str = "efficientnet-lite0"
    weights: str | None = "default"
    device: str = "cpu"
    size: int = 224
    layers: tuple[str, ...] | None = None
    steps: int = 20
    baseline: str = "blur"
    blur: float = 0.05  # blur sigma as a fraction of the short side (``baseline == "blur"``)
    batch_size: int = 16
    seed: int = 0
    cskip: int = 16
    against: str = "random"
    resamples: int = 10_000
    pointing_tolerance: float = 15.0  # pixels at a 224 short side
    backend: str = "torch"  # the backend of the default settings' maps (rtsal.engine.backends)
    precision: str = "f32"



def config_baseline(
    x: torch.Tensor, config: Any, mean: Sequence[float], std: Sequence[float], index: int
) -> torch.Tensor:
    """The deletion/insertion substrate of image ``index`` for ``x`` (N, 3, h, w) as ``config`` says: its
    kind (``config.baseline``), blur as a fraction of the short side (``config.blur``), seed + index."""
    from rtsal.eval import metrics as ev

    return ev.make_baseline(x, config.baseline, mean=mean, std=std, sigma=config.blur * min(x.shape[-2:]),
                            seed=config.seed + index)

def load_boxes(path: str | Path | None) -> dict[str, list[float]]:
    """File name -> (x0, y0, x1, y1) in the image's pixels, from ``--boxes`` or the bundled set."""
    src = Path(path) if path is not None else DATA / "eval" / "boxes.json"
    try:
        raw = json.loads(src.read_text())
    except OSError as exc:
        raise VideoIOError(f"--boxes: cannot read {src}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--boxes: {src} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--boxes: {src} must map file names to boxes")
    boxes = {}
    for name, value in raw.items():
        if name.startswith("_"):
            continue
        box = value.get("box") if isinstance(value, dict) else value
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise UsageError(f"--boxes: {name}: a box is [x0, y0, x1, y1]")
        boxes[name] = [float(v) for v in box]
    return boxes


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def evaluate(
    config: EvalConfig,
    specs: Sequence[MethodSpec],
    samples: Sequence[Sample],
    boxes: dict[str, list[float]] | None = None,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Maps of every method for every sample, then the measures; returns the JSON-able report."""
    import torch

    from rtsal.engine.explainer import Explainer
    from rtsal.eval import metrics as ev

    if not samples:
        raise UsageError("nothing to evaluate: no images or frames")
    labels_ = [s.label for s in specs]
    if config.against not in labels_:
        raise UsageError(f"--against {config.against}: not one of the methods scored")
    boxes = boxes or {}
    settings = dict(
        model=config.model,
        weights=config.weights,
        device=config.device,
        size=config.size,
        layers=list(config.layers) if config.layers else None,
    )
    groups: dict[tuple[str, str, str, str], list[MethodSpec]] = {}
    for s in specs:
        if s.kind == "engine":
            groups.setdefault(s.group, []).append(s)
    maps: dict[str, list[torch.Tensor]] = {}
    map_ms: dict[str, list[float]] = {}  # time to compute each map (engine: the whole group's pass)

    def keep(members: list[MethodSpec], r: Any) -> None:
        for s in members:
            maps.setdefault(s.label, []).append(getattr(r, FIELD[s.method])[0].float().cpu())
            map_ms.setdefault(s.label, []).append(float(r.timings["total"]))

    default_group = tuple(DEFAULTS[k] for k in ("cam", "norm", "weights", "statistic"))
    # the default settings, on the chosen backend (a graph per input shape, built before its first image)
    with Explainer(**settings, backend=config.backend, precision=config.precision) as main:
        module, name = main.model, main.name
        mean, std = main.mean, main.std
        layer_names = [i.label for i in main.layers]
        common = dict(
            mean=main.mean,
            std=main.std,
            class_names=main.class_names,
            layers=layer_names,
            device=config.device,
            channels_last=main.channels_last,
        )
        xs, targets, labels = [], [], []
        for s in samples:
            x = main.preprocess(s.image)
            r = main.explain(x)
            xs.append(x)
            targets.append(int(r.target[0]))
            labels.append(r.topk.labels[0][0])
            keep(groups.get(default_group, []), r)
    channels_last = common["channels_last"]

    def model(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return module(batch)

    for (cam, norm, weights, statistic), members in groups.items():  # one set of hooks at a time
        if (cam, norm, weights, statistic) == default_group:
            continue
        with Explainer(
            module, method="fastcam", cam=cam, norm=norm, layer_weights=weights, statistic=statistic, **common
        ) as ex:
            for x, t in zip(xs, targets, strict=True):
                keep(members, ex.explain(x, target=t))
    for s in specs:
        if s.kind == "comparison":
            log(f"computing {s.label} maps")
            maps[s.label], map_ms[s.label] = comparison_maps(
                s.method, module, common, xs, targets, config.cskip
            )
        elif s.kind == "baseline":
            maps[s.label] = [
                ev.random_map(tuple(x.shape[-2:]), seed=config.seed * 7919 + i)
                if s.method == "random"
                else ev.centre_map(tuple(x.shape[-2:]))
                for i, x in enumerate(xs)
            ]

    per_image: dict[str, dict[str, list[float | None]]] = {s.label: {m: [] for m in MEASURES} for s in specs}
    curves: dict[str, dict[str, list[torch.Tensor]]] = {
        s.label: {k: [] for k in ("deletion", "insertion", "n_deletion", "n_insertion")} for s in specs
    }
    fractions: list[float] = []
    probability = []
    tolerance = config.pointing_tolerance / 224
    for i, (sample, x, t) in enumerate(zip(samples, xs, targets, strict=True)):
        x = x.float().contiguous()
        base = config_baseline(x, config, mean, std, i)
        stack = torch.stack([maps[s.label][i] for s in specs]).to(x.device)
        sc = ev.score_maps(model, x, base, stack, t, config.steps, config.batch_size, config.seed)
        box = boxes.get(sample.name) if sample.clip is None else None
        hits = None
        if box is not None:
            sy, sx = x.shape[-2] / sample.image.shape[0], x.shape[-1] / sample.image.shape[1]
            scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            hits = ev.pointing_hit(stack, scaled, tolerance=tolerance * min(x.shape[-2:]), seed=config.seed)
        fractions = sc.curves.fractions.tolist()
        probability.append(sc.p_image)
        values = {
            "insertion": sc.insertion,
            "deletion": sc.deletion,
            "ins_minus_del": sc.ins_minus_del,
            "n_insertion": sc.n_insertion,
            "n_deletion": sc.n_deletion,
            "n_ins_minus_del": sc.n_ins_minus_del,
            "drop": 100.0 * sc.drop,
            "drop_abs": 100.0 * sc.drop_abs,
            "increase": 100.0 * sc.increase,
        }
        n_del = ev.normalise_curve(sc.curves.deletion, sc.p_image)
        n_ins = ev.normalise_curve(sc.curves.insertion, sc.p_image)
        for j, s in enumerate(specs):
            row = per_image[s.label]
            for key, v in values.items():
                row[key].append(float(v[j]))
            row["pointing"].append(None if hits is None else 100.0 * float(hits[j]))
            c = curves[s.label]
            c["deletion"].append(sc.curves.deletion[j])
            c["insertion"].append(sc.curves.insertion[j])
            c["n_deletion"].append(n_del[j])
            c["n_insertion"].append(n_ins[j])
        log(f"[{i + 1}/{len(xs)}] {sample.name}: {labels[i]} {sc.p_image:.1%}, {len(specs)} maps scored")

    return summarise(
        config,
        specs,
        samples,
        per_image,
        {k: {c: torch.stack(v).mean(0).tolist() for c, v in cs.items()} for k, cs in curves.items()},
        map_ms,
        model_name=name,
        labels=labels,
        targets=targets,
        probability=probability,
        fractions=fractions,
    )


def summarise(
    config: EvalConfig,
    specs: Sequence[MethodSpec],
    samples: Sequence[Sample],
    per_image: dict[str, dict[str, list[float | None]]],
    mean_curves: dict[str, dict[str, list[float]]],
    map_ms: dict[str, list[float]],
    *,
    model_name: str,
    labels: list[str],
    targets: list[int],
    probability: list[float],
    fractions: list[float],
) -> dict[str, Any]:
    """Per-image values -> the report: mean and t-interval per measure, paired bootstrap differences."""
    n = len(samples)
    methods: dict[str, dict[str, Any]] = {}
    for s in specs:
        row = per_image[s.label]
        entry: dict[str, Any] = {"kind": s.kind, "map_ms": map_ms.get(s.label, [0.0] * n)}
        for m in MEASURES:
            vals = [v for v in row[m] if v is not None]
            mean, half = mean_ci(vals) if vals else (math.nan, math.nan)
            entry[m] = {"mean": _num(mean), "ci95": _num(half), "n": len(vals), "values": row[m]}
        entry["curves"] = mean_curves[s.label]
        methods[s.label] = entry
    pairs: dict[str, list[dict[str, Any]]] = {m: [] for m in PAIRED}
    for measure in PAIRED:
        for a, b in itertools.combinations([s.label for s in specs], 2):
            d = paired_bootstrap(
                per_image[a][measure],  # type: ignore[arg-type]
                per_image[b][measure],  # type: ignore[arg-type]
                names=(a, b),
                measure=measure,
                resamples=config.resamples,
                seed=config.seed,
            )
            pairs[measure].append(d.to_json())
    for label, entry in methods.items():  # the table's paired column: each row against ``against``
        entry["paired"] = {}
        for measure in PAIRED:
            if label == config.against:
                entry["paired"][measure] = None
                continue
            d = paired_bootstrap(
                per_image[label][measure],  # type: ignore[arg-type]
                per_image[config.against][measure],  # type: ignore[arg-type]
                names=(label, config.against),
                measure=measure,
                resamples=config.resamples,
                seed=config.seed,
            )
            entry["paired"][measure] = d.to_json()
    settings = asdict(config)
    settings["layers"] = list(config.layers) if config.layers else None
    settings["pointing_tolerance_px_at_224"] = settings.pop("pointing_tolerance")
    settings["headline"] = HEADLINE
    return {
        "model": model_name,
        "images": [s.name for s in samples],
        "inputs": [s.describe() for s in samples],
        "classes": labels,
        "targets": targets,
        "probability": probability,
        "settings": settings,
        "fractions": fractions,
        "methods": methods,
        "pairs": pairs,
    }


def comparison_maps(
    name: str,
    module: torch.nn.Module,
    common: dict[str, Any],
    xs: list[torch.Tensor],
    targets: list[int],
    cskip: int = 16,
) -> tuple[list[torch.Tensor], list[float]]:
    """Maps of a comparison method through ``rtsal.methods.build_runner``: one (h, w) map per image and the
    milliseconds each took."""
    import torch

    from rtsal.engine.explainer import Explainer
    from rtsal.methods import build_runner

    out, ms = [], []
    with Explainer(module, method="fastcam", **common) as ex, build_runner(name, ex, cskip=cskip) as runner:
        for x, t in zip(xs, targets, strict=True):
            t0 = time.perf_counter()
            sal = runner.explain(x, target=t).saliency.detach().float()
            ms.append((time.perf_counter() - t0) * 1e3)
            if tuple(sal.shape[-2:]) != tuple(x.shape[-2:]):
                sal = torch.nn.functional.interpolate(
                    sal.view(1, 1, *sal.shape[-2:]), size=x.shape[-2:], mode="bilinear", align_corners=False
                )
            out.append(sal.reshape(x.shape[-2:]).cpu())
    return out, ms


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v
