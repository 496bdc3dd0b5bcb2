"""``rtsal eval [IMAGES...]``: how faithful each saliency method is, on real photographs.

One row per method: insertion and deletion AUC, their difference, average drop and increase in confidence
(and pointing where a box is known), as mean and 95% interval over the images. Baselines ``random`` and
``centre`` are always included. Methods are ``NAME[/OPTION...]``: an engine method with any of its settings
(``fastcam/gradcam``, ``smoe/linear``, ``smoe/gamma``, ``smoe/entropy``, ...), a comparison method from
``rtsal.methods`` when it is available, ``engine`` (every engine variant), ``default`` or ``all``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.commands.common import add_model_options, parse_weights
from rtsal.errors import UsageError, VideoIOError
from rtsal.io.images import expand_images, read_rgb
from rtsal.names import CAMS, METHODS, NORMS, STATISTICS, WEIGHT_PRESETS

if TYPE_CHECKING:
    import numpy as np
    import torch

DATA = Path(__file__).resolve().parents[1] / "data"
BASELINES = ("random", "centre")
ENGINE = ("fastcam", "smoe", "nonclass", "gradcam", "gradcampp")
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
METRICS = ("insertion", "deletion", "ins_minus_del", "drop", "increase", "pointing")


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
    if name in ENGINE:
        settings = dict(DEFAULTS)
        if name in ("gradcam", "gradcampp"):
            settings["cam"] = name
        for mod in mods:
            key = MODIFIERS.get(mod)
            if key is None:
                raise UsageError(
                    f"method {text!r}: unknown option {mod!r}: choose from {', '.join(MODIFIERS)}"
                )
            if key not in USES[name]:
                raise UsageError(f"method {text!r}: {key} {mod!r} does not change the {name} map")
            settings[key] = mod
        label = "/".join([name] + [settings[k] for k in USES[name] if settings[k] != DEFAULTS[k]])
        return MethodSpec(label, "engine", name, **settings)
    if name in METHODS:
        if mods:
            raise UsageError(f"method {text!r}: options apply to engine methods only")
        return MethodSpec(name, "comparison", name)
    known = ", ".join(
        [*ENGINE, *(n for n in METHODS if n not in ENGINE), *BASELINES, "default", "engine", "all"]
    )
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


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="score saliency methods on photographs (insertion, deletion, average drop)",
        description="How faithful each saliency method is to the model, on real photographs: deletion and "
        "insertion AUC (blurred baseline, probability of the predicted class), their difference, "
        "average drop and increase in confidence, pointing where a box is known. Mean and 95% "
        "interval over the images, against the random and centre baselines.",
        epilog="Methods: NAME[/OPTION...], e.g. fastcam, fastcam/gradcam, smoe/linear, smoe/gamma, "
        "smoe/entropy, "
        f"nonclass, gradcam, gradcampp; 'engine' = {','.join(ENGINE_VARIANTS)}; "
        "'all' adds the comparison methods of rtsal.methods.",
    )
    p.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="image files or directories (default: the bundled evaluation photographs)",
    )
    p.add_argument(
        "--methods",
        default="default",
        metavar="M1,M2,...",
        help=f"methods to score (default: {','.join(DEFAULT_METHODS)}; 'engine' or 'all' for more)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write every number (per image too) as JSON")
    p.add_argument(
        "--plot", default=None, metavar="FILE.png", help="draw the mean deletion and insertion curves"
    )
    p.add_argument(
        "--boxes",
        default=None,
        metavar="FILE.json",
        help='object boxes for the pointing check: {"name.jpg": [x0, y0, x1, y1], ...} in image '
        "pixels (default: the bundled set's boxes)",
    )
    p.add_argument(
        "--steps", type=int, default=20, help="points per curve after the first (default: 20 = 5%%)"
    )
    p.add_argument(
        "--blur",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="baseline blur sigma as a fraction of the short side (default: 0.05)",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="perturbed images per forward pass (default: 16)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline and of tie-breaking")
    p.add_argument(
        "--against",
        default="random",
        metavar="METHOD",
        help="paired column: each method's ins - del minus this method's, image by image (default: random)",
    )
    g = p.add_argument_group("model")
    add_model_options(g)
    g.add_argument("--layers", default=None, metavar="NAME,NAME,...", help="explicit scale-end layers")
    g.add_argument("--size", type=int, default=224, help="model input short side in pixels (default: 224)")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def default_images() -> list[Path]:
    """The bundled evaluation set: the demo photos and ``data/eval``."""
    return expand_images([str(DATA)]) + expand_images([str(DATA / "eval")])


def check_args(args: argparse.Namespace) -> None:
    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2, got {args.steps}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 < args.blur <= 1.0:
        raise UsageError(f"--blur must be within (0, 1], got {args.blur}")
    if args.size < 32:
        raise UsageError(f"--size must be at least 32, got {args.size}")
    for opt, path in (("--json", args.json), ("--plot", args.plot)):
        if path is None:
            continue
        parent = Path(path).resolve().parent
        if Path(path).is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise VideoIOError(f"{opt}: cannot write {path}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install matplotlib") from None


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


def run(args: argparse.Namespace) -> int:
    specs = parse_methods(args.methods)
    against = parse_method(args.against).label
    if against not in {s.label for s in specs}:
        raise UsageError(f"--against {args.against}: not one of the methods scored")
    args.against = against
    check_args(args)
    paths = expand_images(args.images) if args.images else default_images()
    boxes = load_boxes(args.boxes)
    images = [read_rgb(p) for p in paths]
    report = evaluate_methods(args, specs, paths, images, boxes)
    print(format_table(report))
    if args.json:
        write_text(Path(args.json), json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        plot_curves(report, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise VideoIOError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- the evaluation ------------------------------------------------------------------------------------------
def evaluate_methods(
    args: argparse.Namespace,
    specs: list[MethodSpec],
    paths: list[Path],
    images: list[np.ndarray],
    boxes: dict[str, list[float]],
) -> dict[str, Any]:
    """Maps of every method for every image, then the metrics; returns the JSON-able report."""
    import torch

    from rtsal.engine.explainer import Explainer
    from rtsal.eval import metrics as ev

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    settings = dict(
        model=args.model,
        weights=parse_weights(args.weights),
        device=args.device,
        size=args.size,
        layers=args.layers.split(",") if args.layers else None,
    )
    with Explainer(**settings) as main:
        module, name = main.model, main.name
        layer_names = [i.label for i in main.layers]
        common = dict(
            mean=main.mean,
            std=main.std,
            class_names=main.class_names,
            layers=layer_names,
            device=args.device,
            channels_last=main.channels_last,
        )
        xs = [main.preprocess(im) for im in images]
        first = [main.explain(x) for x in xs]
        targets = [int(r.target[0]) for r in first]
        labels = [r.topk.labels[0][0] for r in first]
    channels_last = common["channels_last"]

    def model(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return module(batch)

    maps: dict[str, list[torch.Tensor]] = {}
    map_ms: dict[str, list[float]] = {}  # time to compute each map (engine: the whole group's pass)
    field = {"fastcam": "fused", "smoe": "smoe", "nonclass": "nonclass", "gradcam": "cam", "gradcampp": "cam"}
    groups: dict[tuple[str, str, str, str], list[MethodSpec]] = {}
    for s in specs:
        if s.kind == "engine":
            groups.setdefault(s.group, []).append(s)
    for (cam, norm, weights, statistic), members in groups.items():  # one set of hooks at a time
        with Explainer(
            module, method="fastcam", cam=cam, norm=norm, layer_weights=weights, statistic=statistic, **common
        ) as ex:
            for x, t in zip(xs, targets, strict=True):
                r = ex.explain(x, target=t)
                for s in members:
                    maps.setdefault(s.label, []).append(getattr(r, field[s.method])[0].float().cpu())
                    map_ms.setdefault(s.label, []).append(float(r.timings["total"]))
    for s in specs:
        if s.kind == "comparison":
            log(f"computing {s.label} maps")
            maps[s.label], map_ms[s.label] = comparison_maps(s.method, module, common, xs, targets)
        elif s.kind == "baseline":
            maps[s.label] = [
                ev.random_map(tuple(x.shape[-2:]), seed=args.seed * 7919 + i)
                if s.method == "random"
                else ev.centre_map(tuple(x.shape[-2:]))
                for i, x in enumerate(xs)
            ]

    per_image: dict[str, dict[str, list[float | None]]] = {s.label: {m: [] for m in METRICS} for s in specs}
    curves: dict[str, dict[str, list[torch.Tensor]]] = {
        s.label: {"deletion": [], "insertion": []} for s in specs
    }
    fractions = None
    for i, (path, x, t) in enumerate(zip(paths, xs, targets, strict=True)):
        x = x.float().contiguous()
        base = ev.blur_baseline(x, args.blur * min(x.shape[-2:]))
        stack = torch.stack([maps[s.label][i] for s in specs]).to(x.device)
        c = ev.deletion_insertion(model, x, base, stack, t, args.steps, args.batch_size, args.seed)
        drop, inc = ev.confidence_change(model, x, base, stack, t, args.batch_size)
        box = boxes.get(path.name)
        hits = None
        if box is not None:
            sy, sx = x.shape[-2] / images[i].shape[0], x.shape[-1] / images[i].shape[1]
            scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
            hits = ev.pointing_hit(stack, scaled, tolerance=15.0 * min(x.shape[-2:]) / 224, seed=args.seed)
        fractions = c.fractions
        ins, dele = ev.auc(c.insertion), ev.auc(c.deletion)
        for j, s in enumerate(specs):
            row = per_image[s.label]
            row["insertion"].append(float(ins[j]))
            row["deletion"].append(float(dele[j]))
            row["ins_minus_del"].append(float(ins[j] - dele[j]))
            row["drop"].append(100.0 * float(drop[j]))
            row["increase"].append(100.0 * float(inc[j]))
            row["pointing"].append(None if hits is None else 100.0 * float(hits[j]))
            curves[s.label]["deletion"].append(c.deletion[j])
            curves[s.label]["insertion"].append(c.insertion[j])
        p_top = float(c.deletion[0, 0])
        log(f"[{i + 1}/{len(xs)}] {path.name}: {labels[i]} {p_top:.1%}, {len(specs)} maps scored")

    methods = {}
    for s in specs:
        row = per_image[s.label]
        entry: dict[str, Any] = {"kind": s.kind, "map_ms": map_ms.get(s.label, [0.0] * len(xs))}
        for m in METRICS:
            vals = [v for v in row[m] if v is not None]
            mean, half = ev.mean_ci(vals) if vals else (math.nan, math.nan)
            entry[m] = {"mean": _num(mean), "ci95": _num(half), "n": len(vals), "values": row[m]}
        entry["curves"] = {k: torch.stack(v).mean(0).tolist() for k, v in curves[s.label].items()}
        methods[s.label] = entry
    reference = methods[args.against]["ins_minus_del"]["values"]
    for label, entry in methods.items():  # paired: ins - del minus the reference row's, image by image
        diff = [a - b for a, b in zip(entry["ins_minus_del"]["values"], reference, strict=True)]
        mean, half = ev.mean_ci(diff) if label != args.against else (math.nan, math.nan)
        entry["paired"] = {
            "against": args.against,
            "mean": _num(mean),
            "ci95": _num(half),
            "wins": sum(d > 0 for d in diff),
            "n": len(diff),
        }
    return {
        "model": name,
        "images": [p.name for p in paths],
        "classes": labels,
        "targets": targets,
        "probability": [float(v[0]) for v in curves[specs[0].label]["deletion"]],
        "settings": {
            "steps": args.steps,
            "blur": args.blur,
            "seed": args.seed,
            "size": args.size,
            "baseline": "gaussian blur",
            "pointing_tolerance_px_at_224": 15,
            "against": args.against,
        },
        "fractions": fractions.tolist() if fractions is not None else [],
        "methods": methods,
    }


def comparison_maps(
    name: str, module: torch.nn.Module, common: dict[str, Any], xs: list[torch.Tensor], targets: list[int]
) -> tuple[list[torch.Tensor], list[float]]:
    """Maps of a comparison method through ``rtsal.methods.build_runner``: one (h, w) map per image and the
    milliseconds each took."""
    import time

    import torch

    from rtsal.engine.explainer import Explainer

    try:
        from rtsal.methods import build_runner  # type: ignore[attr-defined]
    except ImportError:
        raise UsageError(f"method {name!r} is registered but rtsal.methods has no build_runner yet") from None
    out, ms = [], []
    with Explainer(module, method="fastcam", **common) as ex:
        runner = build_runner(name, ex)
        enter = getattr(runner, "__enter__", None)
        active = enter() if enter is not None else runner
        try:
            for x, t in zip(xs, targets, strict=True):
                t0 = time.perf_counter()
                sal = active.explain(x, target=t).saliency.detach().float()
                ms.append((time.perf_counter() - t0) * 1e3)
                if tuple(sal.shape[-2:]) != tuple(x.shape[-2:]):
                    sal = torch.nn.functional.interpolate(
                        sal.view(1, 1, *sal.shape[-2:]),
                        size=x.shape[-2:],
                        mode="bilinear",
                        align_corners=False,
                    )
                out.append(sal.reshape(x.shape[-2:]).cpu())
        finally:
            if enter is not None:
                runner.__exit__(None, None, None)
    return out, ms


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


# -- output -------------------------------------------------------------------------------------------------
def format_table(report: dict[str, Any]) -> str:
    """The table: one row per method, mean +- 95% interval half-width; the paired column is each method's
    ins - del minus the ``against`` row's, image by image, with the images where it is higher; pointing is
    hits out of the images with a box."""
    cols = [
        ("insertion", "insertion ^", "{:.3f}"),
        ("deletion", "deletion v", "{:.3f}"),
        ("ins_minus_del", "ins - del ^", "{:.3f}"),
        ("paired", f"vs {report['settings']['against']} ^ (wins)", "{:+.3f}"),
        ("drop", "avg drop % v", "{:.1f}"),
        ("increase", "increase % ^", "{:.0f}"),
        ("pointing", "pointing ^", "hits"),
    ]
    methods = report["methods"]
    width = max(8, *(len(k) for k in methods))
    n_box = max((m["pointing"]["n"] for m in methods.values()), default=0)
    if n_box == 0:
        cols = cols[:-1]

    def cell(label: str, entry: dict[str, Any], fmt: str) -> str:
        if entry["mean"] is None or entry.get("against") == label:
            return "-"
        if fmt == "hits":  # a count out of the images with a box
            return f"{round(entry['mean'] * entry['n'] / 100)}/{entry['n']}"
        half = "" if entry["ci95"] is None else " +- " + fmt.format(entry["ci95"]).lstrip("+")
        wins = f" ({entry['wins']}/{entry['n']})" if "wins" in entry else ""
        return fmt.format(entry["mean"]) + half + wins

    cells = {k: [cell(k, m[key], fmt) for key, _, fmt in cols] for k, m in methods.items()}
    widths = [max(len(title), *(len(c[i]) for c in cells.values())) for i, (_, title, _) in enumerate(cols)]
    lines = [
        f"{report['model']}: {len(report['images'])} images, {report['settings']['steps']} steps, blurred "
        f"baseline; mean +- 95% interval (^ higher is better, v lower is better)"
        + (f"; pointing on {n_box} images with boxes" if n_box else ""),
        "  ".join(["method".ljust(width)] + [t.rjust(w) for (_, t, _), w in zip(cols, widths, strict=True)]),
    ]
    for k, row in cells.items():
        lines.append("  ".join([k.ljust(width)] + [c.rjust(w) for c, w in zip(row, widths, strict=True)]))
    return "\n".join(lines)


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Mean deletion and insertion curves of every method, side by side, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = report["fractions"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for label, m in report["methods"].items():
        style = (
            {"linestyle": "--", "color": "grey" if label == "random" else "black"}
            if m["kind"] == "baseline"
            else {}
        )
        for ax, key in zip(axes, ("deletion", "insertion"), strict=True):
            ax.plot(x, m["curves"][key], label=f"{label} ({m[key]['mean']:.3f})", **style)
    for ax, key, verb in zip(axes, ("deletion", "insertion"), ("removed", "revealed"), strict=True):
        ax.set_title(f"{key} (AUC in the legend; {'lower' if key == 'deletion' else 'higher'} is better)")
        ax.set_xlabel(f"fraction of pixels {verb}, most salient first")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("probability of the predicted class")
    fig.suptitle(f"{report['model']}, mean over {len(report['images'])} images")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise VideoIOError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
