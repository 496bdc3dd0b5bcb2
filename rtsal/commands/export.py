"""``rtsal export MODEL -o FILE``: the classifier and its FastCAM maps as one ONNX graph or OpenVINO IR."""

from __future__ import annotations

import argparse

from rtsal.commands.common import parse_layer_weights, parse_weights
from rtsal.errors import UsageError
from rtsal.models import MODELS
from rtsal.names import CAMS, ENGINE_METHODS, NORMS, STATISTICS, WEIGHT_PRESETS


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="write a model and its saliency maps as one ONNX graph",
        description="Export a classifier with FastCAM inside the graph: ONNX Runtime (or any ONNX runtime) "
        "then returns logits, the chosen map, the per-scale maps, SMOE, CAM, fused and non-class maps in one "
        "run. Class names, mean/std, layers and settings go into the ONNX metadata (keys rtsal.*).",
    )
    p.add_argument("model", metavar="MODEL", help=f"a registered model: {', '.join(MODELS)}")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx|FILE.xml",
                   help="the file to write; its suffix must match --format")
    p.add_argument("--format", default=None, choices=tuple(SUFFIX),
                   help="onnx (maps upsampled inside, for any ONNX runtime) or openvino (the openvino "
                   "backend's graph: per-scale maps at their own resolution, FILE.xml + FILE.bin; the spec "
                   "in its rt_info) (default: from the suffix of -o)")
    p.add_argument("--weights", default="default", metavar="default|PATH|none",
                   help="pretrained weights (default), a saved state dict, or none (random init)")
    p.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"),
                   help="model input height and width (default: 224 224)")
    p.add_argument("--method", default="fastcam", choices=ENGINE_METHODS, metavar="METHOD",
                   help=f"the map the 'saliency' output holds: {', '.join(ENGINE_METHODS)} "
                   "(default: fastcam; models without a pool -> linear head export smoe only)")
    p.add_argument("--cam", default="gradcampp", choices=CAMS,
                   help="CAM fused by fastcam (default: gradcampp)")
    p.add_argument("--norm", default="gauss", choices=tuple(n for n in NORMS if n != "gamma"),
                   help="per-scale normalisation (default: gauss; gamma has no ONNX operator)")
    p.add_argument("--layer-weights", default="equal", metavar="PRESET|W1,W2,...",
                   help=f"scale weights: {', '.join(WEIGHT_PRESETS)} or a comma-separated list "
                   "(default: equal)")
    p.add_argument("--statistic", default="smoe", choices=STATISTICS,
                   help="channel statistic (default: smoe)")
    p.add_argument("--layers", default=None, metavar="NAME,NAME,...",
                   help="explicit scale-end layers (see `rtsal layers MODEL`)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1)")
    p.add_argument("--opset", type=int, default=None, metavar="N",
                   help="ONNX opset, 17..23 (default: the exporter's)")
    p.add_argument("--uint8-input", action="store_true",
                   help="take raw RGB uint8 frames (N, FH, FW, 3); resize and normalise inside the graph")
    p.add_argument("--frame-size", type=int, nargs=2, default=None, metavar=("FH", "FW"),
                   help="frame height and width for --uint8-input (default: --size)")
    return p


SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}


def output_format(output: str, fmt: str | None) -> str:
    """The format to write: ``--format``, else the suffix of ``-o``; a suffix that does not match is refused
    (``-o keep.png`` must not get ONNX bytes)."""
    from pathlib import Path

    suffix = Path(output).suffix.lower()
    if fmt is None:
        found = [f for f, s in SUFFIX.items() if s == suffix]
        if not found:
            raise UsageError(f"-o {output}: name the file .onnx (ONNX) or .xml (OpenVINO IR), or give "
                             "--format")
        return found[0]
    if suffix != SUFFIX[fmt]:
        raise UsageError(f"-o {output}: --format {fmt} writes a {SUFFIX[fmt]} file; name the output so")
    return fmt


def run(args: argparse.Namespace) -> int:
    from rtsal.deploy.onnx import export, require_onnx

    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}: choose one of {', '.join(sorted(MODELS))}")
    from rtsal.outputs import check_outputs

    weights = parse_weights(args.weights)
    # an output that is an input, a folder or unwritable is said first (exit 1), then a wrong suffix (exit 2)
    check_outputs(([weights] if weights not in ("default", None) else []) + [args.model],
                  [("-o", args.output)])
    fmt = output_format(args.output, args.format)
    if fmt == "openvino":
        return run_openvino(args)
    require_onnx()
    path = export(
        args.model,
        args.output,
        weights=parse_weights(args.weights),
        method=args.method,
        cam=args.cam,
        norm=args.norm,
        layer_weights=parse_layer_weights(args.layer_weights),
        statistic=args.statistic,
        layers=args.layers.split(",") if args.layers else None,
        size=tuple(args.size),
        dynamic_batch=args.dynamic_batch,
        opset=args.opset,
        uint8_input=args.uint8_input,
        frame_size=tuple(args.frame_size) if args.frame_size else None,
    )
    kind = "uint8 frames" if args.uint8_input else "normalised float batch"
    print(f"export: wrote {path} ({path.stat().st_size / 1e6:.1f} MB; input: {kind}, "
          f"{'any batch' if args.dynamic_batch else 'batch 1'})")
    return 0


def run_openvino(args: argparse.Namespace) -> int:
    """``--format openvino``: the openvino backend's graph as IR, written atomically."""
    from pathlib import Path

    from rtsal.deploy.openvino import export_openvino
    from rtsal.engine.backends import require
    from rtsal.engine.explainer import Explainer
    from rtsal.outputs import check_outputs

    require("openvino")
    if args.uint8_input or args.dynamic_batch or args.opset is not None:
        raise UsageError("--uint8-input, --dynamic-batch and --opset apply to --format onnx")
    weights = parse_weights(args.weights)
    inputs = [weights] if weights not in ("default", None) else []
    out = Path(args.output)
    check_outputs(inputs + [args.model], [("-o", out), ("-o (.bin)", out.with_suffix(".bin"))])
    import torch

    if weights is None:
        torch.manual_seed(0)
    with Explainer(args.model, weights=weights, method=args.method, cam=args.cam, norm=args.norm,
                   layer_weights=parse_layer_weights(args.layer_weights), statistic=args.statistic,
                   layers=args.layers.split(",") if args.layers else None, size=tuple(args.size),
                   channels_last=False) as ex:
        path = export_openvino(ex, out, tuple(args.size))
    print(f"export: wrote {path} and {path.with_suffix('.bin').name} (OpenVINO IR; input: normalised float "
          f"batch 1, {args.size[0]}x{args.size[1]})")
    return 0
