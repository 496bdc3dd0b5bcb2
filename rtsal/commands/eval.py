"""``rtsal eval [INPUTS...]``: how faithful each saliency method is, on photos and frames of clips.

Argument parsing and wiring only; the evaluation is :mod:`rtsal.eval` (methods: the ``NAME[/OPTION]``
rows; inputs: photos, folders, clips; run: the loop; stats: intervals; report: table, JSON, plot).
"""

from __future__ import annotations

import argparse
import math

from rtsal.commands.common import add_backend_choice, add_model_options, parse_weights
from rtsal.errors import UsageError
from rtsal.eval.inputs import DATA, default_inputs, expand_inputs, load_samples
from rtsal.eval.methods import DEFAULT_METHODS, ENGINE_VARIANTS, parse_method, parse_methods
from rtsal.eval.stability import DEFAULT_FRAMES, DEFAULT_SMOOTH
from rtsal.io.images import IMAGE_SUFFIXES
from rtsal.names import SUBSTRATES
from rtsal.outputs import check_outputs

__all__ = ["DATA", "add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="score saliency methods on photos and video frames (insertion, deletion, average drop)",
        description="How faithful each saliency method is to the model, on photos and frames of clips: "
        "deletion and insertion AUC (probability of the predicted class as the most salient pixels are "
        "replaced by a substrate, or revealed over it), raw and normalised by the intact image's "
        "probability, average drop and increase in confidence, pointing where a box is known. Mean and 95% "
        "interval over the images, against the random and centre baselines; paired bootstrap differences "
        "between methods with a one-line verdict per pair.",
        epilog="Methods: NAME[/OPTION...], e.g. fastcam, fastcam/gradcam, smoe/linear, smoe/gamma, "
        f"smoe/entropy, nonclass, gradcam, gradcampp, scorecam; 'engine' = {','.join(ENGINE_VARIANTS)}; "
        "'all' adds the comparison methods of rtsal.methods.",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="photos, video files (every --every-th frame) or folders of both (default: the bundled "
        "evaluation photos and frames of the bundled demo clip)",
    )
    p.add_argument(
        "--methods",
        default="default",
        metavar="M1,M2,...",
        help=f"methods to score (default: {','.join(DEFAULT_METHODS)}; 'engine' or 'all' for more)",
    )
    p.add_argument(
        "--every",
        type=int,
        default=30,
        metavar="N",
        help="video inputs: score frames 0, N, 2N, ... (default: 30)",
    )
    p.add_argument(
        "--temporal-frames",
        type=int,
        default=DEFAULT_FRAMES,
        metavar="N",
        help="video inputs: the temporal section (steadiness of the maps from frame to frame, and their "
        f"faithfulness) on the first N consecutive frames of each clip; 0 = off (default: {DEFAULT_FRAMES})",
    )
    p.add_argument(
        "--smooth",
        default=",".join(f"{w:g}" for w in DEFAULT_SMOOTH),
        metavar="W,W,...",
        help="temporal section: also the live overlay's --smooth weights on the fastcam maps (default: "
        f"{','.join(f'{w:g}' for w in DEFAULT_SMOOTH)}; 'none' = no smoothing rows)",
    )
    add_backend_choice(p, default="torch")  # the maps of the default settings come from this backend
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
        "--baseline",
        default="blur",
        metavar="|".join(SUBSTRATES),
        help="substrate for removed pixels: blur (a blurred copy), black, mean (the image's mean colour), "
        "noise (uniform, seeded) (default: blur)",
    )
    p.add_argument(
        "--steps", type=int, default=20, help="points per curve after the first (default: 20 = 5%%)"
    )
    p.add_argument(
        "--blur",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="blur substrate: sigma as a fraction of the short side (default: 0.05)",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="perturbed images per forward pass (default: 16)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the random baseline, noise, tie-breaking, bootstrap"
    )
    p.add_argument(
        "--against",
        default="random",
        metavar="METHOD",
        help="paired column: each method minus this method, image by image (default: random)",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=10_000,
        help="bootstrap resamples for the paired intervals (default: 10000)",
    )
    g = p.add_argument_group("model")
    add_model_options(g)
    g.add_argument("--layers", default=None, metavar="NAME,NAME,...", help="explicit scale-end layers")
    g.add_argument("--size", type=int, default=224, help="model input short side in pixels (default: 224)")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    g.add_argument(
        "--cskip", type=int, default=16, help="scorecam: keep the K strongest channels, 0 = all (default: 16)"
    )
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2, got {args.steps}")
    if args.baseline not in SUBSTRATES:
        raise UsageError(f"--baseline must be one of {', '.join(SUBSTRATES)}, got {args.baseline!r}")
    if args.every < 1:
        raise UsageError(f"--every must be at least 1, got {args.every}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not (math.isfinite(args.blur) and 0.0 < args.blur <= 1.0):
        raise UsageError(f"--blur must be within (0, 1], got {args.blur}")
    if args.size < 32:
        raise UsageError(f"--size must be at least 32, got {args.size}")
    if args.cskip < 0:
        raise UsageError(f"--cskip must be 0 (all channels) or more, got {args.cskip}")
    if args.temporal_frames != 0 and args.temporal_frames < 2:
        raise UsageError(f"--temporal-frames must be 0 (off) or at least 2, got {args.temporal_frames}")
    parse_smooth(args.smooth)
    if args.resamples < 100:
        raise UsageError(f"--resamples must be at least 100, got {args.resamples}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install matplotlib") from None


def parse_smooth(text: str) -> tuple[float, ...]:
    """``--smooth``: comma-separated weights within 0..1 (1 excluded), or ``none``."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise UsageError(f"--smooth: give weights such as 0.5,0.8, got {text!r}") from None
    for w in weights:
        if not (math.isfinite(w) and 0.0 < w < 1.0):
            raise UsageError(f"--smooth: each weight must be within (0, 1), got {w:g}")
    return weights


def run(args: argparse.Namespace) -> int:
    from rtsal.eval.report import format_table, format_temporal, format_verdicts, plot_curves, write_json
    from rtsal.eval.run import EvalConfig, evaluate, load_boxes

    specs = parse_methods(args.methods)
    against = parse_method(args.against).label
    if against not in {s.label for s in specs}:
        raise UsageError(f"--against {args.against}: not one of the methods scored")
    check_args(args)
    paths = expand_inputs(args.inputs) if args.inputs else default_inputs()
    check_outputs([*paths, args.boxes], [("--json", args.json), ("--plot", args.plot)])
    boxes = load_boxes(args.boxes)
    samples = load_samples(paths, every=args.every)
    config = EvalConfig(
        model=args.model,
        weights=parse_weights(args.weights),
        device=args.device,
        size=args.size,
        layers=tuple(args.layers.split(",")) if args.layers else None,
        steps=args.steps,
        baseline=args.baseline,
        blur=args.blur,
        batch_size=args.batch_size,
        seed=args.seed,
        cskip=args.cskip,
        against=against,
        resamples=args.resamples,
        backend=args.backend,
        precision=args.precision,
    )
    report = evaluate(config, specs, samples, boxes)
    clips = [p for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
    if clips and args.temporal_frames:
        from rtsal.eval.stability import temporal_section

        report["temporal"] = temporal_section(
            config, specs, clips, frames=args.temporal_frames, smooth=parse_smooth(args.smooth), log=_stderr
        )
    print(format_table(report))
    print()
    print(format_verdicts(report))
    if report.get("temporal"):
        print()
        print(format_temporal(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_curves(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _stderr(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)
