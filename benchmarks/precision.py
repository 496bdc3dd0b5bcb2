"""How far each backend and precision agrees with eager f32: top-1 and map correlations on the bundled images.

For every bundled photograph and eval image (resized to 224x224), the eager torch engine at f32 is the
reference; each backend/precision row gives how many images keep the same top-1, and the worst correlation
over the images of the fused map, the CAM and each per-scale map. The targets (docs/backends.md): the same
top-1 everywhere, every map >= 0.999 at f32 and >= 0.995 at bf16 and int8. Speed: precision_speed.py.

    python benchmarks/precision.py --json benchmarks/results/precision.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.engine.explainer import Explainer  # noqa: E402

DATA = ROOT / "rtsal" / "data"


def images(side: int) -> list[tuple[str, np.ndarray]]:
    paths = sorted(DATA.glob("*.jpg")) + sorted((DATA / "eval").glob("*.jpg"))
    out = []
    for p in paths:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        out.append((p.stem, cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)))
    return out


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rows", default="openvino:f32,openvino:bf16,openvino:int8,onnxruntime:f32,compiled:f32,"
                                     "compiled:bf16")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    weights = "default" if a.model.startswith("efficientnet-lite") else None
    pics = images(a.size)
    torch.manual_seed(0)
    with Explainer(a.model, weights=weights, size=a.size) as ref_ex:
        refs = [ref_ex.explain(im) for _, im in pics]
    rows = []
    for spec in a.rows.split(","):
        backend, precision = spec.split(":")
        torch.manual_seed(0)
        with Explainer(a.model, weights=weights, size=a.size, backend=backend, precision=precision) as ex:
            got = [ex.explain(im) for _, im in pics]
        engines = sorted({r.engine for r in got})
        pairs = list(zip(got, refs, strict=True))
        same = sum(int(g.topk.indices[0, 0]) == int(r.topk.indices[0, 0]) for g, r in pairs)
        n_scales = refs[0].scales.shape[1]
        worst = {
            "fused": min(corr(g.fused, r.fused) for g, r in zip(got, refs, strict=True)),
            "cam": min(corr(g.cam, r.cam) for g, r in zip(got, refs, strict=True)),
            **{f"scale {i}": min(corr(g.scales[:, i], r.scales[:, i]) for g, r in zip(got, refs, strict=True))
               for i in range(n_scales)},
        }
        rows.append({"backend": backend, "precision": precision, "engines": engines, "top1_same": same,
                     "images": len(pics), "worst_corr": worst})
    keys = list(rows[0]["worst_corr"])
    print(f"| {a.model}, {len(pics)} images | engine | same top-1 | " + " | ".join(keys) + " |")
    print("|---" * (3 + len(keys)) + "|")
    for r in rows:
        cells = " | ".join(f"{r['worst_corr'][k]:.4f}" for k in keys)
        row = f"| {r['backend']} {r['precision']} | {','.join(r['engines'])} | {r['top1_same']}/{r['images']}"
        print(f"{row} | {cells} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "size": a.size, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
