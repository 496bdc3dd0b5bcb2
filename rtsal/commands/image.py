"""``rtsal image IN... -o DIR``: one explained PNG per input image, top-5 classes printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtsal.commands.common import (  # noqa: I001
    add_engine_options,
    add_view_options,
    check_engine_args,
    check_view_args,
    engine_inputs,
    expand_images,
    make_runner,
    prepare_output_dir,
    read_rgb,
    write_rgb,
)
from rtsal.errors import RtsalError, UsageError, VideoIOError
from rtsal.models import MODELS
from rtsal.outputs import check_outputs


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
    spec = MODELS.get(args.model)
    if spec is not None and spec.kind == "clip":
        raise UsageError(f"{args.model} explains video clips, not images: use `rtsal video IN -o OUT --model "
                         f"{args.model}`")
    check_engine_args(args)
    inputs = expand_images(args.inputs)
    out_dir = Path(args.output)
    plan = plan_outputs(inputs, out_dir)
    created = not out_dir.exists()
    out_dir = prepare_output_dir(out_dir)
    try:
        check_outputs([*inputs, *engine_inputs(args)], [("-o", dest) for dest in plan.values()])
        written, failed = explain_files(args, plan)
    finally:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed run leaves no empty folder behind
    print(f"wrote {len(written)} image(s) to {out_dir}" + (f"; {len(failed)} failed" if failed else ""))
    if len(failed) == 1:
        raise VideoIOError(failed[0])
    if failed:
        raise VideoIOError(f"{len(failed)} of {len(plan)} image(s) could not be explained (see above)")
    return 0


def plan_outputs(inputs: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Input -> ``out_dir/<stem>.png``; inputs that share a stem get ``<stem>-2.png``, ``<stem>-3.png``...
    so no output overwrites another (inputs named twice are explained once)."""
    plan: dict[Path, Path] = {}
    taken: set[str] = set()
    for path in inputs:
        key = path.resolve()
        if key in plan:
            continue
        name, n = f"{path.stem}.png", 1
        while name.lower() in taken:
            n += 1
            name = f"{path.stem}-{n}.png"
        taken.add(name.lower())
        plan[key] = out_dir / name
    return plan


def explain_files(args: argparse.Namespace, plan: dict[Path, Path]) -> tuple[list[Path], list[str]]:
    """Explain each file into its planned PNG (written atomically); print the top-5 classes of each.
    A file that cannot be read or explained is reported and skipped. -> (written, failure lines)."""
    import sys

    from rtsal.frame.infer import FrameExplainer
    from rtsal.frame.render import FrameRenderer
    from rtsal.types import Frame

    renderer = FrameRenderer(args.view, args.cmap, args.alpha, labels=0 if args.no_labels else 3)
    written: list[Path] = []
    failed: list[str] = []
    with FrameExplainer(make_runner(args), args.method, target=args.target, layer=args.target_layer,
                        cskip=args.cskip) as explainer:
        for k, (path, dest) in enumerate(plan.items()):
            try:
                image = read_rgb(path, warn=lambda line, name=path.name: print(f"{name}: warning: {line}",
                                                                                file=sys.stderr))
                (fr,) = explainer([Frame(k, None, 0.0, image)])
                write_rgb(dest, renderer(image, fr))
            except UsageError:
                raise  # a bad option (e.g. --target out of range for this model), not a bad file
            except RtsalError as exc:
                failed.append(f"{path}: {exc}")
                if len(plan) > 1:  # the closing error line names a single failure
                    print(f"{path.name}: error: {exc}", file=sys.stderr)
                continue
            written.append(dest)
            result = fr.result
            top = ", ".join(
                f"{name} {p:.1%}"
                for name, p in zip(result.topk.labels[0], result.topk.probs[0].tolist(), strict=False)
            )
            t = result.timings
            print(
                f"{path.name}: {top}  [forward {t['forward']:.1f} ms, saliency {t['saliency']:.1f} ms]"
                f" -> {dest}"
            )
    return written, failed
