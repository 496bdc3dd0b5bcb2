"""What FastCAM costs on top of the forward pass it rides on (targets: the README performance section).

For each model at 224x224, batch 1: a plain ``inference_mode`` forward of the same model (no hooks) and the
whole ``Explainer.explain`` call are timed interleaved in one loop; the saliency step alone is then timed on
recorded activations. Everything is reported as a ratio to the forward pass measured in the same run.

    python benchmarks/overhead.py                         # all four models, 2 threads
    python benchmarks/overhead.py --models resnet50 --iters 50 --json overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.models import load_model  # noqa: E402

MODELS = ("resnet50", "resnet18", "mobilenet_v3_large", "efficientnet-lite0")


def photo_224() -> np.ndarray:
    import cv2

    image = cv2.cvtColor(cv2.imread(str(ROOT / "rtsal" / "data" / "coffee.jpg")), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA)


def summary(ms: list[float]) -> dict[str, float]:
    q = np.percentile(ms, [25, 50, 75])
    return {"median": float(q[1]), "iqr": float(q[2] - q[0]), "min": float(min(ms))}


def measure(name: str, iters: int, compile: bool, method: str) -> dict:
    weights = "default" if name == "efficientnet-lite0" else None
    torch.manual_seed(0)
    ex = Explainer(name, weights=weights, method=method, compile=compile)
    plain = load_model(name, weights=weights).module  # a second copy without hooks, same weights
    plain.load_state_dict(ex.model.state_dict())
    plain_cl = plain.to(memory_format=torch.channels_last)
    x = ex.preprocess(photo_224())  # (1, 3, 224, 224), channels-last
    x_nchw = x.contiguous()
    plain_nchw = load_model(name, weights=weights).module
    plain_nchw.load_state_dict(ex.model.state_dict())

    def forward_cl():
        with torch.inference_mode():
            plain_cl(x)

    def forward_nchw():
        with torch.inference_mode():
            plain_nchw(x_nchw)

    def explain():
        ex.explain(x)

    t0 = time.perf_counter()
    explain()  # the first call compiles when compile=True
    first_call_s = time.perf_counter() - t0
    for f in (forward_cl, forward_nchw, explain, forward_cl, explain):
        f()
    times: dict[str, list[float]] = {"forward": [], "forward_nchw": [], "explain": []}
    fns = {"forward": forward_cl, "forward_nchw": forward_nchw, "explain": explain}
    order = list(fns)
    for i in range(iters):
        for key in order[i % 3 :] + order[: i % 3]:  # rotate the order so no call always follows another
            t = time.perf_counter()
            fns[key]()
            times[key].append((time.perf_counter() - t) * 1e3)
    logits, acts = ex.forward(x)
    saliency_ms = []
    for _ in range(max(50, iters * 3)):
        if not ex.closed_form:  # the head's graph is used up by each CAM: record again
            logits, acts = ex.forward(x)
        t = time.perf_counter()
        ex.saliency(logits, acts, (224, 224))
        saliency_ms.append((time.perf_counter() - t) * 1e3)
    ex.close()
    fwd = summary(times["forward"])
    exp = summary(times["explain"])
    sal = summary(saliency_ms)
    return {
        "model": name,
        "method": method,
        "compile": compile,
        "closed_form_cam": ex.closed_form,
        "forward_ms": fwd,
        "forward_nchw_ms": summary(times["forward_nchw"]),
        "explain_ms": exp,
        "saliency_ms": sal,
        "explain_overhead_pct": 100.0 * (exp["median"] / fwd["median"] - 1.0),
        "saliency_pct_of_forward": 100.0 * sal["median"] / fwd["median"],
        "channels_last_speedup": summary(times["forward_nchw"])["median"] / fwd["median"],
        "first_call_s": first_call_s,
        "iters": iters,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--method", default="fastcam")
    p.add_argument("--compile", choices=("both", "on", "off"), default="both")
    p.add_argument("--json", default="bench-out/overhead.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    rows = []
    for name in args.models.split(","):
        for comp in modes:
            row = measure(name, args.iters, comp, args.method)
            rows.append(row)
            print(
                f"{name:20s} compile={'on ' if comp else 'off'} forward {row['forward_ms']['median']:7.2f} ms"
                f"  explain {row['explain_ms']['median']:7.2f} ms ({row['explain_overhead_pct']:+5.1f}%)"
                f"  saliency {row['saliency_ms']['median']:6.3f} ms ({row['saliency_pct_of_forward']:4.2f}%)",
                file=sys.stderr,
            )
    header = (
        "| model | compile | CAM | forward ms (IQR) | NCHW forward ms | explain ms | explain overhead "
        "| saliency step ms | saliency / forward |"
    )
    print(header)
    print("|" + "---|" * 9)
    for r in rows:
        cam = "closed form" if r["closed_form_cam"] else "head autograd"
        print(
            f"| {r['model']} | {'on' if r['compile'] else 'off'} | {cam}"
            f" | {r['forward_ms']['median']:.2f} ({r['forward_ms']['iqr']:.2f})"
            f" | {r['forward_nchw_ms']['median']:.2f} | {r['explain_ms']['median']:.2f}"
            f" | {r['explain_overhead_pct']:+.1f}% | {r['saliency_ms']['median']:.3f}"
            f" | {r['saliency_pct_of_forward']:.2f}% |"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
