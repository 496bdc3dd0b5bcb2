"""Make ``docs/eval-maps.png``: the maps of a few evaluation photographs side by side.

Columns: the photo with the model's top class, the combined SMOE Scale map, the CAM from the head, their
product (FastCAM), and the LOVI colouring of the per-scale maps (violet: early layers ... red/yellow: late;
white: all layers alike). One forward pass per photo with the embedded EfficientNet-Lite0 (offline):

    python scripts/make_eval_figure.py                          # writes docs/eval-maps.png
    python scripts/make_eval_figure.py -o /tmp/maps.png --photos coffee camera --cam gradcam

With ``--curves`` it draws instead the mean deletion and insertion curves of some rows of a ``rtsal eval
--json`` report (``docs/eval-curves.png``):

    rtsal eval --methods engine,scorecam --json eval.json
    python scripts/make_eval_figure.py --curves eval.json --rows fastcam,gradcam,smoe,scorecam,random,centre

The PNG is reduced to a 256-colour palette (about 0.6 MB instead of 3 MB); ``--colors 0`` keeps full colour.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "rtsal" / "data"
PHOTOS = ("coffee", "chelsea", "camera", "flower", "china")


def find_photo(name: str) -> Path:
    for folder in (DATA, DATA / "eval"):
        path = folder / f"{name}.jpg"
        if path.is_file():
            return path
    raise SystemExit(f"no bundled photo named {name!r} in {DATA} or {DATA / 'eval'}")


def overlay(image: np.ndarray, m, alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] map through the jet colour map, blended over the RGB photo."""
    from rtsal.render.colormap import colorize
    from rtsal.render.views import blend

    return blend(image, colorize(m, "jet"), alpha)


def lovi_rgb(stack) -> np.ndarray:
    """The LOVI colouring of a per-scale stack (L, H, W) as RGB uint8."""
    from rtsal.engine.saliency.lovi import lovi
    from rtsal.render.colormap import to_numpy_map

    bgr = to_numpy_map(lovi(stack))
    return (bgr[..., ::-1] * 255.0 + 0.5).astype(np.uint8)


def draw_curves(args: argparse.Namespace) -> int:
    """Mean curves of the chosen rows of an eval report, through ``rtsal eval``'s own plot."""
    import json

    from rtsal.eval.report import plot_curves

    report = json.loads(Path(args.curves).read_text())
    rows = [r for r in args.rows.split(",") if r in report["methods"]]
    report["methods"] = {r: report["methods"][r] for r in rows}
    out = Path(args.output if args.output != p_default() else ROOT / "docs" / "eval-curves.png")
    plot_curves(report, out)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")
    return 0


def p_default() -> str:
    return str(ROOT / "docs" / "eval-maps.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default=p_default())
    p.add_argument("--photos", nargs="+", default=list(PHOTOS), help="bundled photo names")
    p.add_argument(
        "--cam", default="gradcampp", choices=("gradcampp", "gradcam"), help="the CAM FastCAM fuses"
    )
    p.add_argument("--height", type=int, default=240, help="height of each tile in pixels")
    p.add_argument(
        "--colors",
        type=int,
        default=256,
        help="palette size of the PNG, to keep it small (default: 256; 0: full colour)",
    )
    p.add_argument(
        "--curves", default=None, metavar="JSON", help="draw curves from a `rtsal eval --json` report"
    )
    p.add_argument("--rows", default="fastcam,gradcam,smoe,scorecam,random,centre", help="rows for --curves")
    args = p.parse_args(argv)
    if args.curves:
        return draw_curves(args)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rtsal.engine.explainer import Explainer

    cam_title = {"gradcampp": "Grad-CAM++", "gradcam": "Grad-CAM"}[args.cam]
    titles = (
        "photo",
        "SMOE Scale (5 scales)",
        f"{cam_title} (from the head)",
        "FastCAM = SMOE x CAM",
        "LOVI",
    )
    rows = []
    with Explainer("efficientnet-lite0", cam=args.cam) as explainer:
        for name in args.photos:
            bgr = cv2.imread(str(find_photo(name)), cv2.IMREAD_COLOR)
            h, w = bgr.shape[:2]
            image = cv2.cvtColor(
                cv2.resize(bgr, (round(w * args.height / h), args.height), interpolation=cv2.INTER_AREA),
                cv2.COLOR_BGR2RGB,
            )
            r = explainer.explain(image)
            label = f"{name}: {r.topk.labels[0][0]} {float(r.topk.probs[0, 0]):.0%}"
            rows.append(
                (
                    label,
                    [
                        image,
                        overlay(image, r.smoe[0]),
                        overlay(image, r.cam[0]),
                        overlay(image, r.fused[0]),
                        lovi_rgb(r.scales[0]),
                    ],
                )
            )
    widths = [max(tiles[c].shape[1] for _, tiles in rows) for c in range(len(titles))]
    fig, axes = plt.subplots(
        len(rows),
        len(titles),
        figsize=(sum(widths) / 100, len(rows) * args.height / 90),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for i, (label, tiles) in enumerate(rows):
        for j, tile in enumerate(tiles):
            ax = axes[i][j]
            ax.imshow(tile)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
        axes[i][0].set_ylabel(label, fontsize=9)
    fig.suptitle("EfficientNet-Lite0 (embedded weights), one forward pass per photo", fontsize=11)
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.colors:
        import io

        from PIL import Image  # installed with matplotlib

        buf = io.BytesIO()
        fig.savefig(buf, dpi=100, format="png")
        buf.seek(0)
        image = Image.open(buf).convert("RGB")
        image.quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    else:
        fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
