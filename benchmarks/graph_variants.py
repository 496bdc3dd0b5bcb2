"""What the maps cost inside the compiled graph, and which statistic and build setting to use, side by side.

One model at one input shape compiled four or five ways with export + AOTInductor, each called through the
engine's own runner, timed interleaved in one loop (medians, and the ratio to the plain model):

- ``plain``: the model alone;
- ``nomaps``: the engine's graph returning logits, top-k and the CAM only;
- ``fastlog``: the engine's graph (per-scale SMOE with the bit-level ``log2_fast``, as built by rtsal);
- ``log2``: the same with ``torch.log2``;
- ``nofreeze``: ``fastlog`` built without ``freezing``.

    python benchmarks/graph_variants.py                       # Lite0 at 224 -> results/graph-variants.json
    python benchmarks/graph_variants.py --model resnet50 --iters 100

Packages are kept in ``--folder`` between runs (the builds take 20-40 s each).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.engine.backends.common import graph_of  # noqa: E402
from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.engine.graph import ExplainGraph, ParallelRunner, build_configs, build_package, clean_copy  # noqa: E402
from rtsal.engine.saliency.smoe import smoe_scale  # noqa: E402

KINDS = ("plain", "nomaps", "fastlog", "log2", "nofreeze")


class NoMaps(ExplainGraph):
    """The engine's graph without the per-scale maps among its outputs (Inductor drops their computation)."""

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return super().forward(x, target)[:5]


def build(ex: Explainer, kind: str, x: torch.Tensor, path: Path) -> float:
    """Build one variant into ``path``; seconds."""
    from torch._inductor import aoti_compile_and_package

    t0 = time.perf_counter()
    if kind == "plain":
        model = clean_copy(ex.model).eval()
        with torch.inference_mode():
            ep = torch.export.export(model, (x,), strict=False)
        aoti_compile_and_package(ep, package_path=str(path), inductor_configs=build_configs())
    else:
        graph = graph_of(ex.spec.for_input(tuple(x.shape)), clean_copy(ex.model), "compiled")
        if kind == "log2":
            graph.statistic = smoe_scale
        if kind == "nomaps":
            graph.__class__ = NoMaps
        try:
            build_package(graph, x, path, freezing=kind != "nofreeze")
        finally:
            graph.close()
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "rtsal-graph-variants"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "graph-variants.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    weights = "default" if a.model == "efficientnet-lite0" else None
    ex = Explainer(a.model, weights=weights, size=(a.size, a.size))
    x = torch.randn(1, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)
    tgt = torch.full((1,), -1, dtype=torch.long)
    folder = Path(a.folder) / f"{a.model}-{a.size}"
    folder.mkdir(parents=True, exist_ok=True)
    calls, built = {}, {}
    for kind in [k for k in a.kinds.split(",") if k]:
        path = folder / f"{kind}.pt2"
        if not path.exists():
            built[kind] = build(ex, kind, x, path)
        run = ParallelRunner(path, 1)
        calls[kind] = (lambda r: lambda: r(x))(run) if kind == "plain" else (lambda r: lambda: r(x, tgt))(run)
    for f in calls.values():
        for _ in range(5):
            f()
    times: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    for i in range(a.iters):
        k = i % len(order)
        for kind in order[k:] + order[:k]:  # rotate so no variant always follows another
            t = time.perf_counter()
            calls[kind]()
            times[kind].append((time.perf_counter() - t) * 1e3)
    base = float(np.median(times[order[0]]))
    rows = [{"kind": k, "median_ms": float(np.median(v)), "min_ms": float(np.min(v)),
             "ratio_to_first": float(np.median(v)) / base, "build_s": built.get(k)} for k, v in times.items()]
    print(f"\n{a.model} at {a.size}x{a.size}, batch 1, {a.threads} threads, {a.iters} interleaved calls\n")
    print(f"| variant | median ms | min ms | vs {order[0]} |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['ratio_to_first']:.3f} |")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": a.model, "size": a.size, "threads": a.threads, "iters": a.iters,
                               "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    ex.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
