"""Inference streams on the compiled engine: do concurrent ``explain`` calls run in parallel?

One compiled Lite0 (``--size``, default 224x288, built in a child process as the live commands do, or loaded
from the cache) is called by 1 and 2 threads, each with ``torch.set_num_threads(1)``, and by 1 thread with 2,
through two loaders of the same package: torch's ``aoti_load_package`` (one runner; the GIL held for the whole
call) and rtsal's :class:`rtsal.engine.graph.ParallelRunner` (one runner per core, GIL released). Per row:
calls/s of all threads together, CPU seconds of the process per wall second, the most calls seen inside the
runner at once, and how late a 2 ms ``time.sleep`` of another Python thread wakes up while the graph runs
(the GIL: the capture and render threads of the pipeline are such threads).

    RTSAL_CACHE_DIR=/tmp/cache python benchmarks/compiled_streams.py --calls 20  # -> results/*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.engine.graph import GraphOutput, load_package  # noqa: E402


def torch_loader(package: Path):
    from torch._inductor.package import load_package as aoti_load

    runner = aoti_load(str(package))

    def run(x, target):
        out = runner(x, target)
        return GraphOutput(*out[:5], tuple(out[5:]))

    return run


def rate(ex: Explainer, x: torch.Tensor, streams: int, threads: int, calls: int) -> dict:
    def work() -> None:
        torch.set_num_threads(threads)
        for _ in range(2):
            ex.explain(x, size="model")
        barrier.wait()
        for _ in range(calls):
            ex.explain(x, size="model")

    barrier = threading.Barrier(streams + 1)
    ts = [threading.Thread(target=work) for _ in range(streams)]
    for t in ts:
        t.start()
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"streams": streams, "threads": threads, "calls_s": streams * calls / wall,
            "cpu_per_wall": (time.process_time() - c0) / wall}


def gil_probe(ex: Explainer, x: torch.Tensor, seconds: float = 1.0) -> float:
    """Median lateness (ms) of a 2 ms sleep in this thread while another thread explains in a loop."""
    stop = threading.Event()

    def loop() -> None:
        torch.set_num_threads(1)
        while not stop.is_set():
            ex.explain(x, size="model")

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.2)
    late = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        s = time.perf_counter()
        time.sleep(0.002)
        late.append((time.perf_counter() - s - 0.002) * 1e3)
    stop.set()
    t.join()
    return statistics.median(late)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="224x288", help="model input HxW (default 224x288)")
    p.add_argument("--calls", type=int, default=20, help="timed calls per thread per row")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "compiled_streams.json"))
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    ex = Explainer("efficientnet-lite0", size=(h, w), compile="background")
    x = torch.randn(1, 3, h, w)
    t0 = time.perf_counter()
    ex.explain(x, size="model")
    ex._compiled.wait()
    first = ex.explain(x, size="model")
    ready_s = time.perf_counter() - t0
    if first.engine != "compiled":
        print(f"the graph did not build: {first.engine}", file=sys.stderr)
        return 1
    engine = ex._compiled  # the ServedBackend
    shape = (1, 3, h, w)
    backend = engine._built[shape]  # the CompiledBackend
    package = backend.cache.lookup(backend.key)
    loaders = {"torch aoti_load_package (1 runner)": torch_loader(package),
               f"rtsal ParallelRunner ({backend.runners} runners)": load_package(package, backend.runners)}
    rows = []
    for name, run in loaders.items():
        backend._run = run  # the loader under comparison
        for streams, threads in ((1, 1), (2, 1), (1, 2)):
            r = rate(ex, x, streams, threads, a.calls)
            r["loader"] = name
            r["peak_inside"] = getattr(getattr(run, "runner", None), "peak", None)
            rows.append(r)
        rows[-1]["gil_late_ms"] = gil_probe(ex, x)
    ex.close()
    out = {"size": [h, w], "calls": a.calls, "build_or_load_s": ready_s, "source": engine.source.get(shape),
           "torch": torch.__version__, "rows": rows}
    print(f"\ncompiled Lite0 {h}x{w}, explain of a preprocessed tensor; graph ready after {ready_s:.1f} s "
          f"({out['source']})\n")
    print("| loader | streams x threads | calls/s | process CPU / wall | most calls inside at once "
          "| 2 ms sleep of another thread late by |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        gil = f"{r['gil_late_ms']:.1f} ms" if "gil_late_ms" in r else ""
        peak = "" if r["peak_inside"] is None else str(r["peak_inside"])
        print(f"| {r['loader']} | {r['streams']} x {r['threads']} | {r['calls_s']:.1f} | "
              f"{r['cpu_per_wall']:.2f} | {peak} | {gil} |")
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
