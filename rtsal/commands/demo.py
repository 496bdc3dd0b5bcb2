"""``rtsal demo``: the live pipeline on a short real clip bundled with rtsal (a window when there is a
display, else a recorded MP4 and a printed summary); ``--photos`` explains the bundled photographs instead."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from rtsal.commands.common import (
    add_engine_options,
    add_view_options,
    check_engine_args,
    check_view_args,
    prepare_output_dir,
)
from rtsal.commands.webcam import add_live_options, check_live_args

DEFAULT_RECORDING = "rtsal-demo.mp4"


def bundled_photos() -> list[Path]:
    """The real photographs shipped in ``rtsal/data`` (see LICENSE-PHOTOS.md there)."""
    root = resources.files("rtsal") / "data"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".jpg"))


def bundled_clip() -> Path:
    """The demo clip: slow pans and zooms over the bundled photographs (made by scripts/make_demo_clip.py)."""
    return Path(str(resources.files("rtsal") / "data" / "demo.mp4"))


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="run the live pipeline on the bundled clip (or --photos)",
        description="Run the live pipeline on a short real clip bundled with rtsal: in a window when there "
        "is a display, otherwise recorded to an MP4 (--record, default rtsal-demo.mp4) with a printed "
        "summary. --photos explains the bundled photographs into PNG files instead.",
    )
    p.add_argument("--photos", action="store_true",
                   help="explain the bundled photographs into PNGs in -o DIR")
    p.add_argument("-o", "--output", default="rtsal-demo", metavar="DIR",
                   help="--photos output directory (default: rtsal-demo)")
    p.add_argument("--no-labels", action="store_true", help="--photos: do not draw the top-3 classes")
    add_live_options(p)
    add_engine_options(p, compile_default=True)
    add_view_options(p, default_view="overlay")
    p.set_defaults(view=None)  # overlay for the clip, side by side for --photos
    return p


def run(args: argparse.Namespace) -> int:
    if args.photos:
        return run_photos(args)
    return run_clip(args)


def run_photos(args: argparse.Namespace) -> int:
    from rtsal.commands.image import explain_files, plan_outputs
    from rtsal.outputs import check_outputs

    args.view = args.view or "side"
    args.compile = False  # eight photographs of different sizes: one graph each would not pay off
    check_view_args(args)
    check_engine_args(args)
    out_dir = prepare_output_dir(args.output)
    plan = plan_outputs(bundled_photos(), out_dir)
    check_outputs(plan, [("-o", dest) for dest in plan.values()])
    written, _ = explain_files(args, plan)
    print(f"demo: wrote {len(written)} explained photographs to {out_dir.resolve()}")
    return 0


def run_clip(args: argparse.Namespace) -> int:
    import cv2  # noqa: F401  (OpenCV before PyAV, or the window hangs: see rtsal.io.sinks.check_import_order)

    from rtsal.commands.webcam import make_recorder, run_live
    from rtsal.io.sinks import display_problem
    from rtsal.io.sources import StreamSource

    args.view = args.view or "overlay"
    args.source = str(bundled_clip())  # an input like any other: --record must not replace it
    check_live_args(args)
    if not args.no_window and display_problem() is not None:
        args.no_window = True  # no display: record instead
        args.record = args.record or DEFAULT_RECORDING
        print(f"demo: no display, so recording to {args.record} instead of opening a window")
    # With a window the clip plays at its own rate (as a camera would deliver it); without one, every frame.
    source = StreamSource(str(bundled_clip()), realtime=not args.no_window)
    try:
        recorder = make_recorder(args)
    except BaseException:
        source.close()
        raise
    return run_live(args, source, recorder, title="demo")
