"""``rtsal video IN -o OUT``: every frame of a video file explained, real codecs, audio kept, nothing lost.

Decoding, inference and encoding run on three threads (``rtsal.pipeline`` in its no-drop file mode). All
checks that can fail (input, output, codec, container) run before decoding starts. A truncated or corrupt
input still gives a playable output with every frame that decoded (exit 1, one line saying where decoding
stopped); Ctrl-C or SIGTERM flushes the frames done into a playable file (exit 130).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.commands.common import (
    add_clip_options,
    add_engine_options,
    add_threads_option,
    add_view_options,
    apply_threads,
    check_engine_args,
    check_view_args,
    engine_inputs,
    finite_float,
    make_runner,
    plan_streams,
)
from rtsal.errors import UsageError

if TYPE_CHECKING:
    from rtsal.frame.video_job import VideoSettings


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "video",
        help="explain every frame of a video file, write an overlay video (audio kept)",
        description="Explain every frame of a video file and write the explained video: original timestamps "
        "and frame rate, audio copied untouched. Optionally save the raw maps (--maps) and "
        "per-frame classes and timings (--csv).",
    )
    p.add_argument("input", metavar="IN", help="input video file (anything FFmpeg reads)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output video; the container comes from the extension (.mp4, .mkv, .mov, .webm, ...)",
    )
    g = p.add_argument_group("video")
    add_video_options(g)
    g.add_argument(
        "--maps",
        default=None,
        metavar="OUT.npz",
        help="also save every frame's maps at model resolution (float16) with timestamps",
    )
    g.add_argument(
        "--csv",
        default=None,
        metavar="OUT.csv",
        help="also save per frame: index, pts, top-5 classes and scores, stage timings, temporal stability",
    )
    g.add_argument(
        "--report",
        default=None,
        metavar="PAGE.html",
        help="also write a review page: one self-contained HTML file to scrub the overlay frame by frame, "
        "with the maps, a timeline of the top-1 class and of the temporal stability, and events",
    )
    add_threads_option(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    add_engine_options(p, compile_default=True)
    add_view_options(p)
    return p


def add_video_options(g: argparse._ActionsContainer) -> None:
    """The encoding, time-range, batching, smoothing and label options (shared with ``rtsal batch``)."""
    g.add_argument(
        "--codec",
        default="libx264",
        metavar="NAME",
        help="video encoder: libx264 (default), libx265, libvpx-vp9, mpeg4, mjpeg, ffv1, ...",
    )
    g.add_argument(
        "--crf",
        type=finite_float,
        default=23.0,
        help="x264/x265 quality, 0 (lossless) .. 51 (worst); default 23",
    )
    g.add_argument(
        "--preset",
        default="superfast",  # rtsal.io.video.DEFAULT_PRESET (not imported here: `rtsal --help` stays light)
        help="x264/x265 speed preset: ultrafast .. placebo (default: superfast; veryfast makes files about "
        "20%% smaller for 70%% more encoder time)",
    )
    g.add_argument(
        "--pix-fmt",
        default=None,
        metavar="FMT",
        help="output pixel format (default: yuv420p where the encoder takes it: plays everywhere)",
    )
    g.add_argument("--no-audio", action="store_true", help="do not copy the audio streams")
    g.add_argument("--start", type=finite_float, default=None, metavar="SEC", help="first second to process")
    g.add_argument("--end", type=finite_float, default=None, metavar="SEC", help="stop at this second")
    g.add_argument("--batch", type=int, default=1, metavar="N",
                   help="frames per forward pass (default: 1; larger batches cost more CPU per frame "
                   "with the inference streams, see docs/backends.md)")
    add_clip_options(g)
    g.add_argument(
        "--smooth",
        type=finite_float,
        default=0.0,
        metavar="W",
        help="temporal smoothing of the maps: weight of the previous map, 0 (off) .. <1",
    )
    g.add_argument("--no-labels", action="store_true", help="do not draw the top-3 classes on the frames")


def check_args(args: argparse.Namespace) -> None:
    """Usage checks that need no file and no model."""
    check_view_args(args)
    plan_streams(args)  # --streams / --threads
    check_engine_args(args)
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if not 0.0 <= args.smooth < 1.0:
        raise UsageError(f"--smooth must be within 0..1 (1 excluded), got {args.smooth}")
    if not 0.0 <= args.crf <= 63.0:
        raise UsageError(f"--crf must be within 0..51 (x264) or 0..63 (VP9), got {args.crf:g}")
    if args.start is not None and args.start < 0:
        raise UsageError(f"--start must be >= 0 seconds, got {args.start:g}")
    if args.end is not None and args.end <= (args.start or 0.0):
        raise UsageError(f"--end ({args.end:g} s) must come after --start ({args.start or 0.0:g} s)")
    outs = (args.output, args.maps, args.csv, getattr(args, "report", None))
    names = [Path(x).resolve() for x in outs if x]
    if len(set(names)) != len(names):
        raise UsageError("-o, --maps, --csv and --report must name different files")


def settings_of(args: argparse.Namespace) -> VideoSettings:
    """The drawing and encoding options of ``rtsal video`` (also used by ``rtsal batch``)."""
    from rtsal.frame.video_job import VideoSettings

    return VideoSettings(
        view=args.view, cmap=args.cmap, alpha=args.alpha, smooth=args.smooth, labels=not args.no_labels,
        batch=args.batch, start=args.start, end=args.end, codec=args.codec, crf=args.crf, preset=args.preset,
        pix_fmt=args.pix_fmt, audio=not args.no_audio, progress=False if args.no_progress else None,
        streams=plan_streams(args).streams,
    )


def run(args: argparse.Namespace) -> int:
    from rtsal.frame.clips import ClipFrameExplainer, frame_explainer
    from rtsal.frame.video_job import VideoJob

    check_args(args)
    meta = {"model": args.model, "method": args.method, "options": report_options(args)}
    with VideoJob(args.input, args.output, settings_of(args), maps=args.maps, csv_path=args.csv,
                  meta=meta, inputs=engine_inputs(args), report=args.report) as job:
        apply_threads(args)
        with frame_explainer(make_runner(args), args.method, clip_len=args.clip_len,
                             clip_stride=args.clip_stride, target=args.target, layer=args.target_layer,
                             cskip=args.cskip) as explainer:
            clips = isinstance(explainer, ClipFrameExplainer)
            if clips:
                check_clip_video(job, explainer)
            summary = job.run(explainer, batch=explainer.stride if clips else None)
    print(summary.line())
    if job.stability is not None:
        from rtsal.report.review import stability_line

        print(stability_line(job.stability))
    extra = [p for p in (args.maps, args.csv, args.report) if p]
    if extra:
        print(f"also wrote {', '.join(extra)}")
    return 0


def report_options(args: argparse.Namespace) -> dict[str, object]:
    """The command's options as the review page lists them (plain values only)."""
    skip = {"func", "command", "input", "output", "maps", "csv", "report", "no_progress", "debug"}
    return {
        k: v for k, v in sorted(vars(args).items())
        if k not in skip and not callable(v) and isinstance(v, (str, int, float, bool, type(None)))
    }


def check_clip_video(job, explainer) -> None:
    """A video the container says is shorter than the clip model's minimum is refused before decoding."""
    from rtsal.errors import VideoIOError

    need = explainer.min_frames
    frames = job.info.frames
    if frames and frames < need and job.settings.start is None and job.settings.end is None:
        raise VideoIOError(f"{job.reader.path}: {frames} frame(s); the clip model needs at least {need}")
