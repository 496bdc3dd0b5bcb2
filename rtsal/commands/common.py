"""Option groups and helpers shared by the subcommands (torch-free at import)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.engine.spec import PRECISIONS  # the one list (imports no torch)
from rtsal.errors import UsageError, VideoIOError
from rtsal.io.images import expand_images, read_rgb, write_rgb  # noqa: F401  (used by the commands)
from rtsal.models import MODELS
from rtsal.names import CAMS, CMAPS, METHODS, NORMS, STATISTICS, VIEWS, WEIGHT_PRESETS

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer
    from rtsal.options import EngineOptions



MODEL_HELP = (
    f"classifier: a registered name ({', '.join(MODELS)}), any torchvision classifier by name, timm:NAME, "
    "hf:ID_OR_DIR (a folder or the local Hugging Face cache) or module.path:factory (your code); size, "
    "mean/std and class names come from the model (default: efficientnet-lite0, works offline)"
)


def add_model_options(g: argparse._ActionsContainer) -> None:
    """--model and --weights."""
    g.add_argument(
        "--model",
        default="efficientnet-lite0",
        metavar="MODEL",
        help=MODEL_HELP,
    )
    g.add_argument(
        "--weights",
        default="default",
        metavar="default|PATH|none",
        help="the model's own pretrained weights (default), a state dict or safetensors file, or none "
        "(random init)",
    )


def add_engine_options(
    p: argparse.ArgumentParser, methods: tuple[str, ...] | None = None, compile_default: bool = False
) -> None:
    """--model, --weights, --method, the FastCAM settings and --compile / --cache-dir.

    ``compile_default``: the live and video commands compile by default, in the background (eager frames
    until the graph is ready); the others only with ``--compile``, built before the first image. The
    environment variable ``RTSAL_COMPILE`` (1/0) overrides the default.
    """
    import os

    live = compile_default
    env = os.environ.get("RTSAL_COMPILE")  # the default for every command, e.g. RTSAL_COMPILE=0 in tests
    if env is not None:
        compile_default = env.strip().lower() not in ("0", "off", "no", "false", "")
    g = p.add_argument_group("model and method")
    add_model_options(g)
    g.add_argument(
        "--method",
        default="fastcam",
        choices=methods or tuple(METHODS),
        metavar="METHOD",
        help=f"saliency method: {', '.join(methods or METHODS)} (default: fastcam)",
    )
    g.add_argument(
        "--cam", default="gradcampp", choices=CAMS, help="CAM fused by fastcam (default: gradcampp)"
    )
    g.add_argument("--norm", default="gauss", choices=NORMS, help="per-scale normalisation (default: gauss)")
    g.add_argument(
        "--layer-weights",
        default="equal",
        metavar="PRESET|W1,W2,...",
        help=f"scale weights: {', '.join(WEIGHT_PRESETS)} or a comma-separated list (default: equal)",
    )
    g.add_argument(
        "--statistic", default="smoe", choices=STATISTICS, help="channel statistic (default: smoe)"
    )
    g.add_argument(
        "--layers",
        default=None,
        metavar="NAME,NAME,...",
        help="explicit scale-end layers (see `rtsal layers MODEL`)",
    )
    g.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"model input short side in pixels, 32..{MAX_SIZE} (default: the model's: 224; 112 for r3d_18 "
        "and the like); the long side follows the frame's aspect ratio up to 4x the short side (wider frames "
        "are squeezed), so memory is bounded",
    )
    g.add_argument(
        "--target",
        type=int,
        default=None,
        metavar="CLASS",
        help="class index the CAM explains (default: the top-1 class)",
    )
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_backend_options(g)
    g.add_argument(
        "--target-layer",
        default=None,
        metavar="NAME",
        help="layer for the comparison methods (gradcam-full, scorecam, ...; default: last scale end)",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=compile_default,
        help="run the compiled engine: forward pass and maps as one graph, built once per input size and "
        "cached (" + ("built in the background while eager frames flow; default: on" if compile_default
                      else "built before the first image, tens of seconds; default: off") + ")",
    )
    g.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="compiled-graph cache (default: $RTSAL_CACHE_DIR, else $XDG_CACHE_HOME/rtsal, else "
        "~/.cache/rtsal; see `rtsal cache`)",
    )
    p.set_defaults(compile_mode="background" if live else True)
    g.add_argument(
        "--cskip",
        type=int,
        default=16,
        metavar="K",
        help="scorecam: keep the K channels with the largest max activation, 0 = all (default: 16)",
    )


def add_clip_options(g: argparse._ActionsContainer) -> None:
    """--clip-len and --clip-stride, for clip models (3D convolutions over time)."""
    g.add_argument(
        "--clip-len",
        type=int,
        default=None,
        metavar="T",
        help="clip models: frames per clip (default: the model's, 16 for r3d_18)",
    )
    g.add_argument(
        "--clip-stride",
        type=int,
        default=None,
        metavar="S",
        help="clip models, files: frames between window starts (default: --clip-len; smaller overlaps)",
    )


BACKENDS = ("auto", "torch", "compiled", "onnxruntime", "openvino")  # rtsal.engine.backends.BACKENDS


def add_backend_options(g: argparse._ActionsContainer) -> None:
    """--backend, --precision and --onnx (the same on every command that explains)."""
    add_backend_choice(g)
    g.add_argument("--onnx", default=None, metavar="FILE",
                   help="run this `rtsal export` file with --backend onnxruntime (model, size and settings "
                   "come from the file)")


def add_backend_choice(g: argparse._ActionsContainer, default: str | None = None) -> None:
    """--backend and --precision (default backend: ``default``, else $RTSAL_BACKEND, else auto)."""
    import os

    g.add_argument(
        "--backend",
        default=default or os.environ.get("RTSAL_BACKEND", "auto"),
        choices=BACKENDS,
        help="the runtime of the model and its maps: auto (the fastest installed: openvino, then "
        "onnxruntime, then compiled; see docs/backends.md), torch (eager), compiled (AOTInductor), "
        "onnxruntime, openvino (pip install 'rtsal[openvino]'); the graph is built once per input size and "
        "cached; eager frames are served meanwhile (default: auto; $RTSAL_BACKEND overrides)",
    )
    g.add_argument(
        "--precision",
        default="f32",
        choices=PRECISIONS,
        help="inference precision: f32 (default; maps agree with eager to 0.999), bf16 (openvino: faster "
        "on CPUs with bf16, early per-scale maps less exact; compiled, CPU: the first blocks kept f32, every "
        "map >= 0.995) or int8 (openvino with nncf: calibrated on the bundled images, the first blocks kept "
        "f32): see docs/backends.md",
    )


def add_view_options(p: argparse.ArgumentParser, default_view: str = "overlay") -> None:
    """--view, --cmap, --alpha."""
    g = p.add_argument_group("rendering")
    g.add_argument(
        "--view", default=default_view, choices=VIEWS, help=f"what to draw (default: {default_view})"
    )
    g.add_argument("--cmap", default="jet", choices=CMAPS, help="colour map (default: jet)")
    g.add_argument(
        "--alpha", type=finite_float, default=0.5, help="map opacity over the picture, 0..1 (default: 0.5)"
    )


MAX_SIZE = 1024  # the largest --size (model input short side) accepted


def finite_float(text: str) -> float:
    """An argparse type: a finite number (NaN and infinities are refused with exit 2)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def check_device(name: str) -> None:
    """``--device``: a torch device that exists on this machine; else one line (exit 2), before the model."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here (use --device cpu)")


def parse_weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def parse_layer_weights(value: str) -> str | list[float]:
    if value in WEIGHT_PRESETS:
        return value
    import math

    try:
        weights = [float(v) for v in value.split(",")]
    except ValueError:
        raise UsageError(
            f"--layer-weights: use {', '.join(WEIGHT_PRESETS)} or numbers like 1,2,3,4,5"
        ) from None
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"--layer-weights: need finite numbers >= 0 with a positive sum, got {value}")
    return weights


def check_view_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be within 0..1, got {args.alpha}")


def add_threads_option(g: argparse._ActionsContainer) -> None:
    """--streams and --threads for the commands that run the pipeline (webcam, demo, video)."""
    g.add_argument(
        "--streams",
        default="auto",
        metavar="auto|N",
        help="inference streams: N model workers, each on its own frames (default: auto, from the CPU "
        "cores: 1-3 cores -> one stream a core of 1 thread, 4-8 -> streams of 2 threads, more -> of 4, "
        "at most 8; see docs/engine.md)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads per stream (default: from --streams and the cores)",
    )


def plan_streams(args: argparse.Namespace):
    """``(streams, threads)`` from ``--streams`` and ``--threads``; one line and exit 2 for a bad value."""
    from rtsal.streams import plan_streams as plan

    return plan(getattr(args, "streams", "auto"), getattr(args, "threads", None))


def apply_threads(args: argparse.Namespace) -> int:
    """Resolve ``--streams``/``--threads``, set torch's intra-op threads to the threads per stream (each
    stream's thread gets its own OpenMP team of that size) and store ``args.streams_n``; returns the
    threads per stream."""
    import torch

    plan = plan_streams(args)
    torch.set_num_threads(plan.threads)
    args.streams_n = plan.streams
    return plan.threads


def engine_inputs(args: argparse.Namespace) -> list[str]:
    """The files the engine options read (``--weights PATH``, ``--onnx FILE``): inputs like any other, which
    no output of the run may replace."""
    weights = getattr(args, "weights", None)
    found = [weights] if weights and weights.lower() not in ("default", "none") else []
    onnx = getattr(args, "onnx", None)
    return found + ([onnx] if onnx else [])


def check_engine_args(args: argparse.Namespace) -> None:
    """The engine options' values, before the model loads (exit 2 for a bad one)."""
    if args.size is not None and not 32 <= args.size <= MAX_SIZE:
        raise UsageError(f"--size must be within 32..{MAX_SIZE}, got {args.size}")
    parse_layer_weights(args.layer_weights)
    if args.target is not None and args.target < 0:
        raise UsageError(f"--target must be a class index >= 0, got {args.target}")
    check_device(args.device)


def make_explainer(args: argparse.Namespace | EngineOptions) -> Explainer:
    """Build the Explainer the engine options ask for."""
    from rtsal.engine.explainer import Explainer

    check_engine_args(args)
    weights = parse_weights(args.weights)
    if weights is None:
        import torch

        # random weights (--weights none): the same model on every run, worker and command
        torch.manual_seed(0)
    return Explainer(
        model=args.model,
        weights=weights,
        method=args.method,
        cam=args.cam,
        norm=args.norm,
        layer_weights=parse_layer_weights(args.layer_weights),
        statistic=args.statistic,
        layers=args.layers.split(",") if args.layers else None,
        device=args.device,
        size=args.size,
        compile=compile_setting(args) or getattr(args, "compile_mode", True),
        cache_dir=getattr(args, "cache_dir", None),
        backend=backend_setting(args),
        precision=getattr(args, "precision", "f32"),
        threads=getattr(args, "threads", None),
        streams=getattr(args, "streams_n", 1) or 1,
    )


def backend_setting(args: argparse.Namespace) -> str:
    """The Explainer's ``backend`` from ``--backend``: ``auto`` runs eager where no graph is wanted
    (``--no-compile``, ``RTSAL_COMPILE=0``, the comparison methods); a missing runtime is one line."""
    from rtsal.engine.backends import require

    name = getattr(args, "backend", "auto")
    method = getattr(args, "method", "fastcam")
    if not METHODS[method].engine:
        return "torch"  # the comparison methods run their own passes on the eager model
    if name == "auto":  # --precision int8 asks for its one backend (the Explainer's auto takes openvino)
        wanted = compile_setting(args) or getattr(args, "precision", "f32") == "int8"
        return "auto" if wanted else "torch"
    require(name)
    return name


def compile_setting(args: argparse.Namespace) -> bool | str:
    """The Explainer's ``compile``: False, True (build before the first call) or "background"; off for the
    comparison methods, which run their own passes on the model."""
    if not getattr(args, "compile", False) or not METHODS[getattr(args, "method", "fastcam")].engine:
        return False
    return getattr(args, "compile_mode", True)


def prepare_output_dir(path: str | Path) -> Path:
    """Create the output directory if needed and check it can be written, before any work starts."""
    import os

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise VideoIOError(f"output {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoIOError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise VideoIOError(f"output directory {out} is not writable")
    return out


def make_runner(args: argparse.Namespace | EngineOptions):
    """The object that explains frames for the selected ``--method``: a context manager (it owns and closes
    the explainer) with ``explain(images, target=None) -> SaliencyResult`` and a ``cost`` string. Engine
    methods run on the Explainer's one pass; comparison methods run their own passes on its model."""
    from rtsal.methods import build_runner
    from rtsal.options import EngineOptions

    args = EngineOptions.from_args(args)  # one frozen value from here on (picklable: batch workers)
    if getattr(args, "onnx", None):
        if getattr(args, "backend", "auto") not in ("onnxruntime", "auto"):
            raise UsageError("--onnx needs --backend onnxruntime")
        return make_ort_runner(args)
    method = getattr(args, "method", "fastcam")
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    engine = METHODS[method].engine
    # the comparison methods run their own passes
    engine_args = args if engine else args.replace(method="fastcam", compile=False, backend="torch")
    explainer = make_explainer(engine_args)
    try:
        return build_runner(
            method,
            explainer,
            layer=getattr(args, "target_layer", None),
            cskip=getattr(args, "cskip", 16),
            close_explainer=True,
        )
    except BaseException:
        explainer.close()
        raise


def make_ort_runner(args: argparse.Namespace):
    """The ONNX Runtime runner for ``--backend onnxruntime --onnx FILE`` (engine methods only)."""
    method = getattr(args, "method", "fastcam")
    if method not in METHODS or not METHODS[method].engine:
        raise UsageError(f"--backend onnxruntime runs the engine methods only, not {method!r}")
    if getattr(args, "target", None) is not None:
        raise UsageError("--target needs the torch backend: an ONNX export explains the top-1 class")
    if getattr(args, "device", "cpu") != "cpu":
        raise UsageError("--backend onnxruntime runs on the CPU: leave out --device")
    from rtsal.deploy.runtime import OrtExplainer

    runner = OrtExplainer(args.onnx, method=method, threads=getattr(args, "threads", None))
    size = getattr(args, "size", None)
    if size is not None and size != min(runner.size):
        runner.close()
        raise UsageError(f"--size {size} does not match {args.onnx}, exported at {runner.size[0]}x"
                         f"{runner.size[1]}: leave out --size, or export again with --size {size} {size}")
    return runner
