"""``rtsal bench``: every rtsal method and the installed peers, timed against a plain forward pass."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtsal.commands.common import finite_float
from rtsal.errors import UsageError
from rtsal.models import MODELS


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="time every saliency method against a plain forward pass",
        description=(
            "Time every rtsal method and the installed peer libraries (pytorch-grad-cam, torchcam, captum: "
            "pip install 'rtsal[bench]') on one model and input size. Each call is paired with a plain "
            "inference_mode forward pass of the same model in the same loop; the table gives the median, "
            "the 10th-90th percentile spread and the ratio to that forward pass. Methods that take long get "
            "fewer iterations (--budget), stated in the table."
        ),
    )
    p.add_argument(
        "--model", default="efficientnet-lite0", metavar="NAME", help=f"one of: {', '.join(MODELS)}"
    )
    p.add_argument(
        "--weights",
        default="default",
        metavar="default|PATH|none",
        help="pretrained (default), a state dict, or none: random init, same timings (default: default)",
    )
    p.add_argument("--size", type=int, default=224, help="square input side in pixels (default: 224)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--iters", type=int, default=30, help="timed calls per method at most (default: 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default: 3)")
    p.add_argument(
        "--budget",
        type=finite_float,
        default=20.0,
        metavar="SECONDS",
        help="time per method; slow methods get fewer iterations, at least one (default: 20)",
    )
    p.add_argument("--cskip", type=int, default=16, metavar="K", help="Score-CAM channels kept (default: 16)")
    p.add_argument(
        "--target-layer",
        default=None,
        metavar="NAME",
        help="layer of the CAM methods (default: last scale end)",
    )
    p.add_argument(
        "--only",
        default="",
        metavar="A,B",
        help="only methods whose library/name (rtsal/fastcam, torchcam/GradCAMpp) contains one of these",
    )
    p.add_argument(
        "--skip", default="", metavar="A,B", help="skip methods whose library/name contains one of these"
    )
    p.add_argument("--no-peers", action="store_true", help="rtsal's methods only")
    p.add_argument(
        "--backends",
        action="store_true",
        help="instead: for every installed backend (torch, compiled, onnxruntime, openvino), the plain "
        "forward pass of that runtime as a user builds it against rtsal's explained fastcam call on it, "
        "interleaved (--iters rounds, --threads threads, default 2); see docs/backends.md",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="onnxruntime: also time the model and its FastCAM graph in ONNX Runtime (exported here unless "
        "--onnx names an `rtsal export` file of this model and size; pip install 'rtsal[onnx]')",
    )
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="the export to time with --backend onnxruntime")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time rtsal's engine methods on the compiled engine (rows 'fastcam (compiled)', ...): the "
        "graph is built or loaded from the cache first, and its build time is reported apart",
    )
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="compiled-graph cache (default: $RTSAL_CACHE_DIR, else $XDG_CACHE_HOME/rtsal)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--plot", default=None, metavar="FILE.png", help="also draw a log-scale bar chart (matplotlib)"
    )
    p.add_argument(
        "--cskip-sweep",
        default=None,
        metavar="K,K,...",
        help="instead: Score-CAM time and agreement with full Score-CAM for each K (0 = all channels), "
        "on the bundled photos",
    )
    return p


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _check_args(args: argparse.Namespace) -> None:
    for name in ("iters", "batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.budget <= 0:
        raise UsageError("--warmup must be >= 0 and --budget > 0")
    if args.cskip < 0:
        raise UsageError(f"--cskip must be 0 (all channels) or a positive count, got {args.cskip}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    sweep = None
    if args.cskip_sweep is not None:
        try:
            sweep = [int(k) for k in _names(args.cskip_sweep)]
        except ValueError:
            raise UsageError("--cskip-sweep: give channel counts like 0,8,16,32 (0 = all)") from None
        if not sweep or min(sweep) < 0:
            raise UsageError("--cskip-sweep: give channel counts like 0,8,16,32 (0 = all)")
    if args.onnx and args.backend != "onnxruntime":
        raise UsageError("--onnx needs --backend onnxruntime")
    if args.backend == "onnxruntime":
        from rtsal.deploy.onnx import require_onnx

        require_onnx()
    from rtsal.outputs import check_outputs

    check_outputs([args.onnx], [("--json", args.json), ("--plot", args.plot)])
    if args.backends:
        return _backends(args)
    json_path = Path(args.json) if args.json else None
    plot_path = Path(args.plot) if args.plot else None

    from rtsal.bench import harness as bm

    if plot_path is not None and sweep is None:
        bm.check_plotting()
    import torch

    from rtsal.commands.common import parse_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    s = bm.setup(
        args.model, parse_weights(args.weights), args.size, args.batch, args.device, args.target_layer
    )
    try:
        env = bm.environment(s, args.size, args.batch)
        header = (
            f"rtsal bench: {env['model']} at {args.size}x{args.size}, batch {args.batch}, {env['device']}, "
            f"{env['threads']} threads, torch {env['torch']}; CAM layer {env['layer']}"
        )
        if sweep is not None:
            return _sweep(bm, s, args, sweep, header, json_path, env)
        extra = [lambda: bm.onnxruntime_entries(s, args.onnx)] if args.backend == "onnxruntime" else []
        if args.compile:
            weights = parse_weights(args.weights)
            extra.append(lambda: bm.compiled_entries(s, args.model, weights, args.cache_dir,
                                                     progress=bm.eprint))
        rows = bm.run_all(
            s,
            iters=args.iters,
            warmup=args.warmup,
            budget_s=args.budget,
            cskip=args.cskip,
            peers=not args.no_peers,
            only=_names(args.only),
            skip=_names(args.skip),
            progress=bm.eprint,
            extra=extra,
        )
    finally:
        s.explainer.close()
    if not rows:
        raise UsageError("no method matched --only/--skip")
    table = bm.format_table(rows, header)
    for note in s.notes:
        table += f"\nnote: {note}"
    print(table)
    settings = {k: getattr(args, k) for k in ("iters", "warmup", "budget", "cskip", "weights", "compile")}
    if json_path is not None:
        _write_json(json_path, bm.to_json(rows, env, settings))
        print(f"wrote {json_path}")
    if plot_path is not None:
        bm.plot(
            rows,
            f"{env['model']} {args.size}x{args.size}, {env['device']}: time / forward pass",
            str(plot_path),
        )
        print(f"wrote {plot_path}")
    return 0


def _sweep(bm, s, args, ks: list[int], header: str, json_path: Path | None, env: dict) -> int:
    images = [bm.bundled_photo(name) for name in ("coffee", "chelsea", "rocket", "astronaut")]
    rows = bm.cskip_sweep(s, ks, images, iters=args.iters, budget_s=args.budget, progress=bm.eprint)
    print(bm.format_cskip(rows, header + "\nScore-CAM with CSKIP K vs full Score-CAM (4 bundled photos)"))
    if json_path is not None:
        from dataclasses import asdict

        _write_json(json_path, {"environment": env, "cskip": [asdict(r) for r in rows]})
        print(f"wrote {json_path}")
    return 0


def _backends(args: argparse.Namespace) -> int:
    """``--backends``: each installed runtime's plain forward against its explained call."""
    from rtsal.bench.backends import measure, table
    from rtsal.bench.harness import eprint
    from rtsal.commands.common import parse_weights

    rows, builds = measure(args.model, parse_weights(args.weights), args.size, args.threads or 2, args.iters,
                           cache_dir=args.cache_dir, log=eprint)
    print(f"rtsal bench --backends: {args.model} at {args.size}x{args.size}, batch 1, {args.threads or 2} "
          f"threads, {args.iters} interleaved rounds")
    print(table(args.model, rows))
    print("builds (s): " + ", ".join(f"{k} {v:.1f}" for k, v in builds.items()))
    if args.json:
        _write_json(Path(args.json), {"rows": [r.as_dict() for r in rows], "build_s": builds})
        print(f"wrote {args.json}")
    return 0


def _write_json(path: Path, data: dict) -> None:
    import json

    from rtsal.outputs import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
