"""Which backend runs a classifier and its FastCAM maps fastest here; what the maps cost inside ONNX Runtime.

For each model at 224x224, batch 1, one run times, interleaved (the order rotates each iteration):

- ``torch forward``: the plain model in ``inference_mode`` (channels-last), no hooks, no maps;
- ``torch explain``: ``Explainer.explain`` on the preprocessed batch (eager), and with ``compile=True``
  (the channel statistic compiled; skipped with ``--no-compile`` or when compiling fails);
- ``ort logits``: ONNX Runtime on the model alone (``torch.onnx.export`` of the bare model);
- ``ort fastcam``: ONNX Runtime on ``rtsal export`` (logits and every map at model resolution).

Each is reported as its median and as a ratio to the plain torch forward of the same run; "maps in ORT" is
``ort fastcam / ort logits - 1``, the saliency overhead inside ONNX Runtime.

    python benchmarks/backends.py                                  # lite0 + resnet50, 2 threads
    python benchmarks/backends.py --models resnet50 --iters 30 --json benchmarks/results/backends.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.deploy.onnx import export  # noqa: E402
from rtsal.deploy.runtime import OrtExplainer  # noqa: E402
from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.models import load_model  # noqa: E402

MODELS = ("efficientnet-lite0", "resnet50")
SIZE = (224, 224)


def photo() -> np.ndarray:
    import cv2

    image = cv2.cvtColor(cv2.imread(str(ROOT / "rtsal" / "data" / "coffee.jpg")), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_AREA)


def summary(ms: list[float]) -> dict[str, float]:
    q = np.percentile(ms, [25, 50, 75])
    return {"median": float(q[1]), "iqr": float(q[2] - q[0]), "min": float(min(ms))}


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(name: str, iters: int, threads: int, compile: bool, folder: Path) -> dict:
    weights = "default" if name == "efficientnet-lite0" else None
    torch.manual_seed(0)
    ex = Explainer(name, weights=weights, size=SIZE)
    state = folder / f"{name}.pt"
    torch.save(ex.model.state_dict(), state)
    plain = load_model(name, weights=state).module.to(memory_format=torch.channels_last)
    x = ex.preprocess(photo())
    x_np = x.contiguous().numpy()
    notes = []

    t = time.perf_counter()
    full = export(name, folder / f"{name}-fastcam.onnx", weights=state, size=SIZE)
    export_s = time.perf_counter() - t
    bare = load_model(name, weights=state).module
    logits_only = folder / f"{name}-logits.onnx"
    prog = torch.onnx.export(bare, (torch.randn(1, 3, *SIZE),), None, dynamo=True, verbose=False,
                             external_data=False, input_names=["images"], output_names=["logits"])
    prog.save(str(logits_only))
    sess_full, sess_bare = ort_session(full, threads), ort_session(logits_only, threads)
    runner = OrtExplainer(full, threads=threads)

    fns = {
        "torch forward": lambda: plain(x),
        "torch explain": lambda: ex.explain(x),
        "ort logits": lambda: sess_bare.run(None, {"images": x_np}),
        "ort fastcam": lambda: sess_full.run(None, {"images": x_np}),
        "ort explain (rtsal runner)": lambda: runner.explain(x.contiguous()),
    }
    if compile:
        try:
            exc_ = Explainer(name, weights=state, size=SIZE, compile=True)
            t = time.perf_counter()
            exc_.explain(x)
            notes.append(f"compile=True first call {time.perf_counter() - t:.1f} s")
            fns["torch explain compiled"] = lambda: exc_.explain(x)
        except Exception as exc:  # no compiler here: say so in the table's notes
            notes.append(f"compile=True failed: {type(exc).__name__}")
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    with torch.inference_mode():
        for f in fns.values():  # warm-up
            f()
            f()
        for i in range(iters):
            k = i % len(order)
            for key in order[k:] + order[:k]:
                t = time.perf_counter()
                fns[key]()
                times[key].append((time.perf_counter() - t) * 1e3)
    ex.close()
    runner.close()
    rows = {k: summary(v) for k, v in times.items()}
    base = rows["torch forward"]["median"]
    return {
        "model": name,
        "weights": "pretrained" if weights else "random (weights=None, seeded)",
        "size": list(SIZE),
        "threads": threads,
        "iters": iters,
        "export_s": export_s,
        "onnx_mb": full.stat().st_size / 1e6,
        "ms": rows,
        "ratio_to_torch_forward": {k: r["median"] / base for k, r in rows.items()},
        "maps_in_ort_pct": 100.0 * (rows["ort fastcam"]["median"] / rows["ort logits"]["median"] - 1.0),
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="leave out Explainer(compile=True)")
    p.add_argument("--json", default="benchmarks/results/backends.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            results.append(measure(name, args.iters, args.threads, not args.no_compile, Path(tmp)))
            print(f"{name}: done", file=sys.stderr)
    print("| model | backend | median ms (IQR) | x torch forward |")
    print("|---|---|---|---|")
    for r in results:
        for k, m in r["ms"].items():
            ratio = r["ratio_to_torch_forward"][k]
            print(f"| {r['model']} | {k} | {m['median']:.2f} ({m['iqr']:.2f}) | {ratio:.2f} |")
        print(f"| {r['model']} | maps inside ORT | {r['maps_in_ort_pct']:+.1f}% | |")
    for r in results:
        if r["notes"]:
            print(f"{r['model']}: {'; '.join(r['notes'])}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    meta = {
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "note": "measured on a shared 2-core machine under heavy load: compare ratios within one run only",
    }
    out.write_text(json.dumps({"meta": meta, "rows": results}, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
