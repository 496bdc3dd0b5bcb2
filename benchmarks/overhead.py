"""What FastCAM costs on top of the forward pass it rides on (targets: the README performance section).

For each model at 224x224 (clip models: a 16-frame clip at their own 112x112), batch 1: a plain
``inference_mode`` forward of the same model (no hooks) and the whole ``Explainer.explain`` call are timed
interleaved in one loop; the saliency step alone is then timed on recorded activations. Everything is
reported as a ratio to the forward pass measured in the same run.

With ``--compile on`` (the default) the same loop also times the compiled engine: the plain forward compiled
the same way (export + AOTInductor, freezing) and the compiled ``explain``, with build times (cold cache) and
the warm-cache start-up of a new process.

    python benchmarks/overhead.py                         # all four models, 2 threads
    python benchmarks/overhead.py --models resnet50 --iters 50 --json overhead.json
    python benchmarks/overhead.py --models r3d_18,swin_t --compile off --iters 5  # clip model, transformer
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


def plain_package(model: torch.nn.Module, x: torch.Tensor, folder: Path):
    """The plain forward of ``model`` compiled and called exactly as the engine's graph is (export +
    AOTInductor with the engine's build settings, ``graph.build_configs``; called through the same
    ``ParallelRunner``): the fair baseline for the compiled explain. Returns (callable, build seconds)."""
    from torch._inductor import aoti_compile_and_package

    from rtsal.engine.graph import build_configs

    t0 = time.perf_counter()
    with torch.inference_mode():
        ep = torch.export.export(model, (x,), strict=False)
    path = aoti_compile_and_package(ep, package_path=str(folder / "plain.pt2"),
                                    inductor_configs=build_configs())
    run = load_plain(Path(path))
    run(x)
    return run, time.perf_counter() - t0


def load_plain(path: Path):
    """A plain package through the engine's own loader (the same call overhead as the graph's)."""
    from rtsal.engine.graph import ParallelRunner

    return ParallelRunner(path, 1)


WARM_START = """
import sys, time, torch
t0 = time.perf_counter()
from rtsal.engine.explainer import Explainer
torch.set_num_threads({threads})
ex = Explainer({name!r}, weights={weights!r}, compile=True, cache_dir={cache!r})
t1 = time.perf_counter()
x = ex.preprocess(torch.zeros(224, 224, 3, dtype=torch.uint8).numpy())
r = ex.explain(x)
t2 = time.perf_counter()
print(r.engine, t1 - t0, t2 - t1)
"""


def warm_start(name: str, weights: str | None, cache: Path, threads: int) -> dict[str, float | str]:
    """A new process, warm cache: seconds from launch to the first compiled result, and from the model
    being loaded to it."""
    import subprocess

    code = WARM_START.format(threads=threads, name=name, weights=weights, cache=str(cache))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    engine, load_s, first_s = out.stdout.split()[-3:]
    return {"engine": engine, "launch_to_first_compiled_s": wall, "model_load_s": float(load_s),
            "model_loaded_to_first_compiled_s": float(first_s)}


def measure(name: str, iters: int, compile: bool, method: str, cache: Path) -> dict:
    import tempfile

    weights = "default" if name == "efficientnet-lite0" else None
    torch.manual_seed(0)
    ex = Explainer(name, weights=weights, method=method)
    plain = load_model(name, weights=weights).module  # a second copy without hooks, same weights
    plain.load_state_dict(ex.model.state_dict())
    plain_cl = plain.to(memory_format=torch.channels_last) if ex.channels_last else plain
    photo = photo_224()
    if ex.kind == "clip":  # the photo panning right, as many frames as the model's clips
        photo = np.stack([np.roll(photo, 3 * t, axis=1) for t in range(ex.clip_len or 16)])
    x = ex.preprocess(photo)  # (1, 3, 224, 224), channels-last; clips (1, 3, T, 112, 112)
    out_size = tuple(x.shape[2:])
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

    fns = {"forward": forward_cl, "forward_nchw": forward_nchw, "explain": explain}
    extra: dict = {}
    if compile:
        # the compiled engine over the same weights; a fresh cache entry so the first call builds (cold)
        weights_file = None
        if weights is None:  # random weights: give the compiled explainer the same ones
            weights_file = Path(tempfile.mkdtemp()) / "w.pt"
            torch.save(ex.model.state_dict(), weights_file)
        t0 = time.perf_counter()
        cx = Explainer(name, weights=weights_file or weights, method=method, compile=True, cache_dir=cache)
        t1 = time.perf_counter()
        r = cx.explain(x)
        t2 = time.perf_counter()
        if r.engine != "compiled":  # e.g. a head-gradient CAM: the engine says so and runs eagerly
            print(f"{name}: the compiled engine did not run ({r.engine}); eager rows only", file=sys.stderr)
            cx.close()
            compile = False
            extra["compiled_engine"] = r.engine
    if compile:
        key = tuple(x.shape)
        src = cx._compiled.source[key]
        extra.update(
            engine_source=src,
            model_load_s=t1 - t0,
            cold_first_compiled_s=t2 - t1 if src != "cache" else None,
            build_s=cx._compiled.build_seconds[key],
        )
        from rtsal.engine.spec import weights_hash

        # the plain package is the benchmark's own (not an rtsal cache entry); kept between runs
        folder = (Path(tempfile.gettempdir()) / "rtsal-bench-plain-v2"
                  / f"{name}-{'x'.join(map(str, x.shape))}-{weights_hash(plain_cl)[:12]}")
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / "plain.pt2").exists():
            plain_run, plain_build = load_plain(folder / "plain.pt2"), None
        else:
            plain_run, plain_build = plain_package(plain_cl, x, folder)
        extra["plain_build_s"] = plain_build

        def forward_compiled():
            plain_run(x)

        graph_ms: list[float] = []  # the graph call and the step after it (fuse_maps, result), per call
        after_ms: list[float] = []

        def explain_compiled():
            t = cx.explain(x).timings
            graph_ms.append(t["forward"])
            after_ms.append(t["saliency"])

        fns.update(forward_compiled=forward_compiled, explain_compiled=explain_compiled)
        w = str(weights_file) if weights_file else weights
        extra["warm_start"] = warm_start(name, w, cache, torch.get_num_threads())

    t0 = time.perf_counter()
    explain()
    first_call_s = time.perf_counter() - t0
    for f in list(fns.values()) * 2:
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for i in range(iters):
        k = i % len(order)
        for key in order[k:] + order[:k]:  # rotate the order so no call always follows another
            t = time.perf_counter()
            fns[key]()
            times[key].append((time.perf_counter() - t) * 1e3)
    logits, acts = ex.forward(x)
    saliency_ms = []
    for _ in range(max(20, iters * 2)):
        if not ex.closed_form:  # the head's graph is used up by each CAM: record again
            logits, acts = ex.forward(x)
        t = time.perf_counter()
        ex.saliency(logits, acts, out_size)
        saliency_ms.append((time.perf_counter() - t) * 1e3)
    if compile and not ex.closed_form:
        extra["head_grad_eager_ms"] = head_grad_eager_ms(ex, x, max(20, iters * 2))
    ex.close()
    med = {k: summary(v) for k, v in times.items()}
    fwd, exp, sal = med["forward"], med["explain"], summary(saliency_ms)
    row = {
        "model": name,
        "method": method,
        "compile": compile,
        "closed_form_cam": ex.closed_form,
        "forward_ms": fwd,
        "forward_nchw_ms": med["forward_nchw"],
        "explain_ms": exp,
        "saliency_ms": sal,
        "explain_overhead_pct": 100.0 * (exp["median"] / fwd["median"] - 1.0),
        "saliency_pct_of_forward": 100.0 * sal["median"] / fwd["median"],
        "channels_last_speedup": med["forward_nchw"]["median"] / fwd["median"],
        "first_call_s": first_call_s,
        "iters": iters,
    }
    row.update({k: v for k, v in extra.items() if k == "compiled_engine"})
    if compile:
        cx.close()
        fc, ec = med["forward_compiled"], med["explain_compiled"]
        row.update(
            forward_compiled_ms=fc,
            explain_compiled_ms=ec,
            compiled_explain_over_compiled_forward=ec["median"] / fc["median"],
            compiled_explain_over_eager_forward=ec["median"] / fwd["median"],
            compiled_forward_speedup=fwd["median"] / fc["median"],
            compiled_graph_ms=summary(graph_ms),
            compiled_after_graph_ms=summary(after_ms),
            **extra,
        )
    return row


def head_grad_eager_ms(ex: Explainer, x: torch.Tensor, iters: int) -> dict[str, dict[str, float]]:
    """What the head's gradient costs when run eagerly after the graph instead of inside it: ``traced`` is
    the traced head-gradient graph ``(a, target) -> g`` (the one the compiled engine compiles in) called op
    by op (the head's forward and backward); ``autograd`` is the eager engine's backward pass through the
    head alone (its forward already ran with the model's)."""
    from rtsal.engine.graph import clean_copy, trace_head_grad

    head = trace_head_grad(clean_copy(ex.model), ex.layers[-1], x)
    traced, autograd = [], []
    for _ in range(iters + 2):
        logits, acts = ex.forward(x)  # the last scale end is a leaf that requires grad; the head's graph
        t = logits.detach().argmax(dim=1)
        score = logits.gather(1, t.view(-1, 1)).sum()
        t0 = time.perf_counter()
        torch.autograd.grad(score, acts[-1])
        t1 = time.perf_counter()
        with torch.inference_mode():
            head(acts[-1].detach(), t)
        t2 = time.perf_counter()
        autograd.append((t1 - t0) * 1e3)
        traced.append((t2 - t1) * 1e3)
    return {"traced": summary(traced[2:]), "autograd": summary(autograd[2:])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--method", default="fastcam")
    p.add_argument("--compile", choices=("on", "off"), default="on",
                   help="on: also the compiled plain forward and the compiled explain (builds; minutes)")
    p.add_argument("--cache-dir", default=None, help="compiled-graph cache (default: a fresh temporary one, "
                   "so the build time is the cold start)")
    p.add_argument("--json", default="bench-out/overhead.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import tempfile

    comp = args.compile == "on"
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="rtsal-bench-cache-"))
    rows = []
    for name in args.models.split(","):
        row = measure(name, args.iters, comp, args.method, cache)
        rows.append(row)
        print(
            f"{name:20s} forward {row['forward_ms']['median']:7.2f} ms"
            f"  explain {row['explain_ms']['median']:7.2f} ms ({row['explain_overhead_pct']:+5.1f}%)"
            f"  saliency {row['saliency_ms']['median']:6.3f} ms ({row['saliency_pct_of_forward']:4.2f}%)"
            + (f"  compiled: forward {row['forward_compiled_ms']['median']:7.2f} ms"
               f" explain {row['explain_compiled_ms']['median']:7.2f} ms"
               if "explain_compiled_ms" in row else ""),
            file=sys.stderr,
        )
    header = (
        "| model | CAM | eager forward ms (IQR) | eager explain ms | eager explain / forward "
        "| saliency step / forward | compiled forward ms | compiled explain ms | compiled explain / compiled "
        "forward | compiled explain / eager forward | build s (graph, plain) | warm start s (launch, "
        "model loaded) |"
    )
    print(header)
    print("|" + "---|" * 12)
    for r in rows:
        cam = "closed form" if r["closed_form_cam"] else "head gradient"
        line = (
            f"| {r['model']} | {cam}"
            f" | {r['forward_ms']['median']:.2f} ({r['forward_ms']['iqr']:.2f})"
            f" | {r['explain_ms']['median']:.2f}"
            f" | {r['explain_ms']['median'] / r['forward_ms']['median']:.3f}"
            f" | {r['saliency_pct_of_forward']:.1f}%"
        )
        if "forward_compiled_ms" in r:
            ws = r.get("warm_start") or {}
            warm = (f"{ws['launch_to_first_compiled_s']:.1f}, {ws['model_loaded_to_first_compiled_s']:.1f}"
                    if "launch_to_first_compiled_s" in ws else "failed")
            line += (
                f" | {r['forward_compiled_ms']['median']:.2f} | {r['explain_compiled_ms']['median']:.2f}"
                f" | {r['compiled_explain_over_compiled_forward']:.3f}"
                f" | {r['compiled_explain_over_eager_forward']:.3f}"
                f" | {r['build_s']:.0f}, {r['plain_build_s'] or 0:.0f} | {warm} |"
            )
        else:
            line += " | | | | | | |"
        print(line)
    if any("compiled_graph_ms" in r for r in rows):
        print("\n| model | compiled forward ms | graph call ms | after the graph ms | compiled explain ms "
              "| head forward + backward, traced graph run eagerly ms | head backward, eager autograd ms |")
        print("|" + "---|" * 7)
        for r in rows:
            if "compiled_graph_ms" not in r:
                continue
            hg = r.get("head_grad_eager_ms")
            hg_text = f"{hg['traced']['median']:.2f} | {hg['autograd']['median']:.2f}" if hg else " |"
            print(f"| {r['model']} | {r['forward_compiled_ms']['median']:.2f}"
                  f" | {r['compiled_graph_ms']['median']:.2f} | {r['compiled_after_graph_ms']['median']:.2f}"
                  f" | {r['explain_compiled_ms']['median']:.2f} | {hg_text} |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    from rtsal.outputs import atomic_write_text

    atomic_write_text(out, json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
