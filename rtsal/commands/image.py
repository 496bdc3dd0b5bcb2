"""``rtsal image IN... -o DIR``: one explained PNG per input image, top-5 classes printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtsal.commands.common import (
    add_engine_options,
    add_view_options,
    check_view_args,
    expand_images,
    make_runner,
    prepare_output_dir,
    read_rgb,
    write_rgb,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "image",
        help="explain image files, write one PNG each",
        description="Explain image files (or directories of them); write one PNG per input.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or directories")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the PNGs")
    p.add_argument("--no-labels", action="store_true", help="do not draw the top-3 classes on the images")
    add_engine_options(p)
    add_view_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    check_view_args(args)
    inputs = expand_images(args.inputs)
    out_dir = prepare_output_dir(args.output)
    written = explain_files(args, inputs, out_dir)
    print(f"wrote {len(written)} image(s) to {out_dir}")
    return 0


def explain_files(args: argparse.Namespace, inputs: list[Path], out_dir: Path) -> list[Path]:
    """Explain each file and write ``<stem>.png`` into ``out_dir``; print the top-5 classes of each."""
    from rtsal.render.views import draw_topk, make_view

    view = make_view(args.view, args.cmap, args.alpha)
    written = []
    with make_runner(args) as explainer:
        for path in inputs:
            image = read_rgb(path)
            result = explainer.explain(image, target=args.target)
            out = view.annotate(image, result, 0)
            if not args.no_labels:
                draw_topk(out, result, 0)
            dest = out_dir / f"{path.stem}.png"
            write_rgb(dest, out)
            written.append(dest)
            top = ", ".join(
                f"{name} {p:.1%}"
                for name, p in zip(result.topk.labels[0], result.topk.probs[0].tolist(), strict=False)
            )
            t = result.timings
            print(
                f"{path.name}: {top}  [forward {t['forward']:.1f} ms, saliency {t['saliency']:.1f} ms]"
                f" -> {dest}"
            )
    return written
