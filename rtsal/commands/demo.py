"""``rtsal demo``: explain the photographs bundled with rtsal and say where the results are."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from rtsal.commands.common import add_engine_options, add_view_options, check_view_args, prepare_output_dir


def bundled_photos() -> list[Path]:
    """The real photographs shipped in ``rtsal/data`` (see LICENSE-PHOTOS.md there)."""
    root = resources.files("rtsal") / "data"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".jpg"))


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="explain the bundled photographs",
                       description="Explain the real photographs bundled with rtsal and write PNGs.")
    p.add_argument("-o", "--output", default="rtsal-demo", metavar="DIR", help="output directory (default: rtsal-demo)")
    p.add_argument("--no-labels", action="store_true", help="do not draw the top-3 classes on the images")
    add_engine_options(p)
    add_view_options(p, default_view="side")
    return p


def run(args: argparse.Namespace) -> int:
    from rtsal.commands.image import explain_files

    check_view_args(args)
    out_dir = prepare_output_dir(args.output)
    written = explain_files(args, bundled_photos(), out_dir)
    print(f"demo: wrote {len(written)} explained photographs to {out_dir.resolve()}")
    return 0
