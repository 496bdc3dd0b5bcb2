"""``rtsal batch INPUTS... -o OUTDIR``: every video of an archive explained on a Dask cluster, resumable.

Wiring only: the options (every ``rtsal video`` engine, view and video option means the same here), the
settings recorded in the manifest, and the per-file pipeline handed to the workers. The pipeline is
``rtsal video``'s own job (same decode, infer, render and encode threads, audio kept); the worker
(``rtsal.batch.worker``) gives it temporary output paths and commits them when complete.
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
from rtsal.commands.video import VideoJob, add_video_options, check_args
from rtsal.errors import UsageError

NOT_SETTINGS = {"threads"}  # changes speed, not outputs: a resumed run may use other values


def _settings_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    add_video_options(p.add_argument_group("video"))
    add_engine_options(p)
    add_view_options(p)
    return p


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "batch",
        help="explain a whole archive of videos on a Dask cluster (resumable, manifest)",
        description="Explain every frame of many video files: one task per file on a local Dask cluster of "
        "worker processes (or an existing cluster with --scheduler), each worker building its engine once. "
        "Outputs mirror the input tree under OUTDIR (<path>.mp4, <path>.csv, and <path>.npz with --maps); "
        "OUTDIR/manifest.jsonl records every file, and a second run resumes where the first stopped.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders (recursive) and globs")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if needed)"
    )
    b = p.add_argument_group("batch")
    b.add_argument("--maps", action="store_true", help="also save each file's maps as <path>.npz")
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


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The options that change an output, by name (recorded in the manifest, compared on resume)."""
    names = [a.dest for a in _settings_parser()._actions if a.dest not in NOT_SETTINGS]
    return {n: getattr(args, n) for n in names}


def _check(args: argparse.Namespace) -> None:
    check_args(argparse.Namespace(**{**vars(args), "output": "out.mp4", "csv": None, "maps": None}))
    for flag, value in (("--workers", args.workers), ("--threads-per-worker", args.threads_per_worker)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.scheduler and (args.workers or args.threads_per_worker):
        raise UsageError("--workers and --threads-per-worker start a local cluster; --scheduler uses yours")
    if args.size < 32:
        raise UsageError(f"--size must be at least 32, got {args.size}")
    from rtsal.io.video import check_codec

    check_codec(args.codec)


def run(args: argparse.Namespace) -> int:
    _check(args)
    from rtsal.batch import BatchOptions, FilePipeline, format_report, run_batch

    opts = BatchOptions(
        inputs=list(args.inputs),
        outdir=Path(args.output),
        settings=settings_from(args),
        maps=args.maps,
        resume=args.resume,
        force=args.force,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        torch_threads=args.threads,
        scheduler=args.scheduler,
        quiet=args.quiet,
    )
    report = run_batch(opts, FilePipeline(build_engine, explain_file))
    print(format_report(report))
    if report.interrupted:
        print("rtsal batch: interrupted; run the same command again to finish (it resumes)", file=sys.stderr)
    return report.exit_code


# -- the per-file pipeline the workers run (moves to the frame layer when it lands) -----------------------


def build_engine(settings: dict[str, Any]) -> Any:
    """The runner for these settings, entered, and the SHA-256 of the weights it loaded."""
    from rtsal.batch.worker import Engine

    args = argparse.Namespace(**settings)
    apply_threads(args)
    runner = make_runner(args)
    runner.__enter__()
    try:
        return Engine(runner, _weights_sha256(runner.explainer.model))
    except BaseException:
        runner.__exit__(None, None, None)
        raise


def _weights_sha256(model: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _FileJob(VideoJob):
    """``rtsal video``'s job without its summary line (the batch report has it)."""

    def _summary(self, stats: Any, elapsed: float) -> None:
        pass


def explain_file(runner: Any, input: str, outputs: dict[str, Path], settings: dict[str, Any]) -> int:
    """Run ``rtsal video``'s pipeline on one file into ``outputs`` (temporary paths); frames written."""
    from rtsal.io.video import AudioSource, VideoReader, VideoWriter

    args = argparse.Namespace(
        **settings,
        input=input,
        output=str(outputs["video"]),
        csv=str(outputs["csv"]) if "csv" in outputs else None,
        no_progress=True,
    )
    args.maps = str(outputs["maps"]) if "maps" in outputs else None
    with VideoReader(input, start=args.start, end=args.end) as reader:
        info = reader.info
        audio = None
        if info.audio_streams and not args.no_audio:
            audio = AudioSource(str(reader.path), start=args.start, end=args.end, offset=args.start or 0.0)
        writer = VideoWriter(
            args.output,
            args.codec,
            crf=args.crf,
            preset=args.preset,
            pix_fmt=args.pix_fmt,
            rate=info.rate,
            time_base=info.time_base,
            offset=args.start or 0.0,
            audio=audio,
        )
        try:
            job = _FileJob(args, reader, writer, runner)
        except BaseException:
            writer.close(complete=False)
            raise
        job.run()
        return job.written
