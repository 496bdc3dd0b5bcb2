"""``rtsal batch INPUTS... -o OUTDIR``: every video of an archive explained on a Dask cluster, resumable.

Wiring only: the options (every ``rtsal video`` engine, view and video option means the same here) and
the engine builder handed to the workers; ``rtsal.batch`` does the rest with the frame layer's
``VideoJob``, the same file pipeline as ``rtsal video``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from rtsal.commands.common import (
    add_engine_options,
    add_threads_option,
    add_view_options,
    apply_threads,
    make_runner,
)
from rtsal.commands.video import add_video_options, check_args, settings_of
from rtsal.errors import UsageError


def _engine_names() -> list[str]:
    p = argparse.ArgumentParser(add_help=False)
    add_engine_options(p)
    return [a.dest for a in p._actions]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "batch",
        help="explain a whole archive of videos on a Dask cluster (resumable, manifest)",
        description="Explain every frame of many video files: one task per file on a local Dask cluster of "
        "worker processes (or an existing cluster with --scheduler), each worker building its engine once. "
        "Outputs mirror the input tree under OUTDIR (<path>.mp4, <path>.csv, <path>.npz with --maps, "
        "<path>.html and index.html with --report); "
        "OUTDIR/manifest.jsonl records every file, and a second run resumes where the first stopped.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders (recursive) and globs")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if needed)"
    )
    b = p.add_argument_group("batch")
    b.add_argument("--maps", action="store_true", help="also save each file's maps as <path>.npz")
    b.add_argument(
        "--report",
        action="store_true",
        help="also write a review page per file (<path>.html, as `rtsal video --report`) and "
        "OUTDIR/index.html with a row per video",
    )
    b.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip files the manifest records as done whose outputs still match their SHA-256 (default: on "
        "when OUTDIR has a manifest with the same settings); --no-resume redoes every file",
    )
    b.add_argument(
        "--force", action="store_true", help="run even though the manifest was made with other settings"
    )
    b.add_argument(
        "--workers", type=int, default=None, metavar="N", help="local worker processes (default: cores / 2)"
    )
    b.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        metavar="K",
        help="files at once per worker (default: 1)",
    )
    b.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="use an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (paths must be the same on its workers)",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bars or per-file lines; the report only")
    g = p.add_argument_group("video")
    add_video_options(g)
    add_threads_option(g)
    add_engine_options(p)
    add_view_options(p)
    return p


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options by name, as :func:`build_engine` takes them on the workers."""
    return {**{n: getattr(args, n) for n in _engine_names()}, "threads": args.threads}


def _check(args: argparse.Namespace) -> None:
    check_args(
        argparse.Namespace(**{**vars(args), "output": "out.mp4", "csv": None, "maps": None, "report": None})
    )
    for flag, value in (("--workers", args.workers), ("--threads-per-worker", args.threads_per_worker)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.scheduler and (args.workers or args.threads_per_worker):
        raise UsageError("--workers and --threads-per-worker start a local cluster; --scheduler uses yours")
    if args.size is not None and args.size < 32:
        raise UsageError(f"--size must be at least 32, got {args.size}")
    from rtsal.io.video import check_codec

    check_codec(args.codec)


def _video_args(args: argparse.Namespace) -> dict[str, Any]:
    """The video options of each file. ``--streams auto`` is one inference stream per file here: the workers
    already run files side by side on the cores (``--streams N`` asks for N streams in every file)."""
    out = {**vars(args), "no_progress": True}
    if str(args.streams).strip().lower() == "auto":
        out["streams"] = 1
    return out


def run(args: argparse.Namespace) -> int:
    _check(args)
    from rtsal.batch import BatchOptions, format_report, run_batch

    opts = BatchOptions(
        inputs=list(args.inputs),
        outdir=Path(args.output),
        engine=engine_settings(args),
        video=settings_of(argparse.Namespace(**_video_args(args))),
        maps=args.maps,
        report=args.report,
        resume=args.resume,
        force=args.force,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        torch_threads=args.threads,
        scheduler=args.scheduler,
        quiet=args.quiet,
    )
    report = run_batch(opts, build_engine)
    print(format_report(report))
    if report.interrupted:
        print("rtsal batch: interrupted; run the same command again to finish (it resumes)", file=sys.stderr)
    return report.exit_code


def build_engine(settings: dict[str, Any]) -> Any:
    """A worker's engine for these engine options: the frame layer's explainer over the chosen method's
    runner, and the SHA-256 of the weights it loaded (module-level, so Dask pickles it by name)."""
    from rtsal.batch.worker import Engine
    from rtsal.frame.clips import frame_explainer

    ns = argparse.Namespace(**settings)
    apply_threads(ns)  # this worker thread's torch threads; sets streams_n
    from rtsal.options import EngineOptions

    args = EngineOptions.from_args(ns)  # the one value the engine is built from
    # random weights (--weights none) are seeded in make_explainer: the same on every worker, or one archive
    # would be explained by several models
    explainer = frame_explainer(  # a sliding window for clip models, as `rtsal video` runs them
        make_runner(args), args.method, clip_len=getattr(args, "clip_len", None),
        clip_stride=getattr(args, "clip_stride", None), target=args.target, layer=args.target_layer,
        cskip=args.cskip,
    )
    try:
        return Engine(explainer, _weights_sha256(explainer.runner.model))
    except BaseException:
        explainer.close()
        raise


def _weights_sha256(model: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
