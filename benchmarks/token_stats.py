"""Which channel statistic for signed transformer tokens (vit_b_16, swin_t)? A quick measurement.

SMOE Scale needs non-negative input; token values are signed. For each scale of each model, on a real
photograph (rtsal/data/coffee.jpg), this prints:

- ``positive``: the share of token values above 0 (what ReLU keeps) and ``dead``: the share of locations
  where ReLU leaves fewer than 5% of the channels (SMOE there is close to 0 whatever the tokens say);
- for every statistic (ReLU-then-SMOE, -mean, -std, -max; truncated-normal entropy on the signed values;
  and SMOE of the absolute value, a third option): the spatial spread of its normalised map (std of the
  gauss-normalised map: near 0 means a flat, uninformative map) and its correlation with the token norm
  ``||token||_2`` (how much of the map is just the token's magnitude);
- the milliseconds each statistic takes on that scale.

Weights: ``default`` needs torchvision's pretrained weights (a download once); ``--weights none`` runs on
seeded random weights (mechanics only: which statistic stays informative on trained weights is then not
measured). The table and a JSON file under benchmarks/results/ say which.

    python benchmarks/token_stats.py --weights none
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.engine.saliency.norm import gauss_norm  # noqa: E402
from rtsal.engine.saliency.smoe import STATISTICS, smoe_scale  # noqa: E402

VARIANTS = {
    "relu+smoe": lambda a: smoe_scale(torch.relu(a)),
    "relu+mean": lambda a: STATISTICS["mean"](torch.relu(a)),
    "relu+std": lambda a: STATISTICS["std"](torch.relu(a)),
    "relu+max": lambda a: STATISTICS["max"](torch.relu(a)),
    "entropy (signed)": STATISTICS["entropy"],
    "abs+smoe": lambda a: smoe_scale(a.abs()),
}


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def measure(name: str, weights: str | None) -> list[dict]:
    import cv2

    photo = cv2.cvtColor(cv2.imread(str(ROOT / "rtsal" / "data" / "coffee.jpg")), cv2.COLOR_BGR2RGB)
    photo = cv2.resize(photo, (224, 224), interpolation=cv2.INTER_AREA)
    torch.manual_seed(0)
    rows = []
    with Explainer(name, weights=weights) as ex:
        with torch.no_grad():
            _, acts = ex.forward(ex.preprocess(photo))
        for layer, raw in zip(ex.layers, acts, strict=True):
            a = ex.to_grid(raw.detach()).float()  # (1, C, h, w)
            norm = a.norm(dim=1)
            alive = (a > 0).float().mean(dim=1)
            row = {
                "model": name,
                "layer": layer.name,
                "positive": float((a > 0).float().mean()),
                "dead": float((alive < 0.05).float().mean()),
                "stats": {},
            }
            for label, fn in VARIANTS.items():
                t = time.perf_counter()
                m = fn(a)
                ms = (time.perf_counter() - t) * 1e3
                g = gauss_norm(m)
                row["stats"][label] = {"spread": float(g.std()), "corr_norm": corr(m, norm), "ms": ms}
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit_b_16,swin_t")
    p.add_argument("--weights", default="none", help="default (pretrained) or none (seeded random)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="benchmarks/results/token-stats.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = None if args.weights == "none" else args.weights
    rows = [r for name in args.models.split(",") for r in measure(name, weights)]
    print(f"weights: {args.weights}; spread = std of the gauss-normalised map; corr = with the token L2 norm")
    print("| model | layer | positive | dead | " + " | ".join(VARIANTS) + " |")
    print("|" + "---|" * (4 + len(VARIANTS)))
    for r in rows:
        cells = [f"{s['spread']:.2f} / {s['corr_norm']:+.2f}" for s in r["stats"].values()]
        head = f"| {r['model']} | {r['layer']} | {r['positive']:.0%} | {r['dead']:.0%} | "
        print(head + " | ".join(cells) + " |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"weights": args.weights, "torch": torch.__version__, "threads": args.threads,
            "date": time.strftime("%Y-%m-%d %H:%M"), "note": "measured under load (shared 2-core machine)"}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
