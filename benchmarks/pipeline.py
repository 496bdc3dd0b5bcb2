"""The live pipeline against the model's own speed (targets: the README performance section), in one run.

1. **forward only**: a plain ``inference_mode`` forward of the same model (a copy without hooks,
   channels-last) on a 640x480 frame preprocessed exactly as the pipeline does, timed before and after the
   pipeline runs.
   **model only**: the same engine's ``explain`` (preprocess, forward, maps at model size) of the same
   frame in a loop, all cores, no pipeline, in one thread of all the cores and in the auto rule's streams:
   the faster is the model's own rate, the reference of every ratio (timed before and after the end-to-end
   runs).
2. **end to end**: ``rtsal webcam --source CLIP --no-realtime --no-window``'s session (capture thread decoding
   a 640x480 H.264 clip, ``--streams`` infer threads running ``--method``, render thread drawing the
   overlay, top-3 labels and HUD into a null sink), as fast as possible, per ``--configs``
   (STREAMSxTHREADS): frames/s, the ratio to model only, latency, drops, CPU per frame (process and per
   stage), resident memory. Target: >= 90 % of the model-only rate.
3. **real time**: the same clip paced at its frame rate (``--realtime``, a latest-frame slot as for a
   camera), per rate in ``--rt-fps``: capture->render latency in ms and in frame periods, and drops.
   Target: latency <= 2 frame periods when the model keeps up.
4. **soak** (``--soak N``): N frames through the end-to-end session (the decoded clip looped in memory),
   resident memory sampled every ``--soak-every`` frames; growth from the first sample after warm-up to the
   last. Target: flat within 5 % over 10,000 frames.

    python benchmarks/pipeline.py                                 # -> benchmarks/results/pipeline.json
    python benchmarks/pipeline.py --soak 10000                    # + the 10,000-frame soak
    python benchmarks/pipeline.py --frames 20 --rt-seconds 2 --soak 60 --soak-every 20   # check the script
    python benchmarks/pipeline.py --variants 1:default,2:default,2:PASSIVE   # taskset 1/2 cores, OMP policy
    python benchmarks/pipeline.py --compile both --frames 120 --rt-fps ""   # eager and compiled, side by side

``--compile on`` runs every row on the compiled engine, model only included (the graph for the model input
size is built, or loaded from the cache, before anything is timed; every frame of a timed run is counted by
the engine that drew it); ``both`` runs the eager rows and then the compiled rows in one run, each ratio
against the model-only rate of its own engine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2  # before PyAV (see rtsal.io.sinks.check_import_order)
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.cli import build_parser  # noqa: E402
from rtsal.commands.common import apply_threads, make_runner  # noqa: E402
from rtsal.commands.webcam import live_settings  # noqa: E402
from rtsal.frame.infer import FrameExplainer  # noqa: E402
from rtsal.frame.live import LiveSession  # noqa: E402
from rtsal.io.sinks import NullSink  # noqa: E402
from rtsal.io.sources import StreamSource  # noqa: E402
from rtsal.io.video import VideoWriter  # noqa: E402
from rtsal.models import load_model  # noqa: E402
from rtsal.streams import plan_streams  # noqa: E402
from rtsal.types import Frame  # noqa: E402

PHOTOS = ("coffee", "chelsea", "rocket", "astronaut")
SIZE = (640, 480)


def photo(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ROOT / "rtsal" / "data" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)


def make_clip(path: Path, frames: int, fps: float) -> Path:
    """A 640x480 H.264 clip: slow pans over the bundled photographs (real content, every frame different)."""
    w, h = SIZE
    per = max(1, frames // len(PHOTOS))
    with VideoWriter(path, rate=Fraction(fps).limit_denominator(1001), crf=20) as writer:
        for k in range(frames):
            img = photo(PHOTOS[(k // per) % len(PHOTOS)])
            u = (k % per) / max(1, per - 1)
            ih, iw = img.shape[:2]
            ch = int(ih * 0.85)
            cw = min(iw, int(ch * w / h))
            x = round((iw - cw) * u)
            y = (ih - ch) // 2
            frame = cv2.resize(img[y : y + ch, x : x + cw], SIZE, interpolation=cv2.INTER_LINEAR)
            writer.write(frame, pts=k / fps)
    return path


def rss_mb() -> float:
    """Resident memory now (MB); Linux /proc, else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def webcam_args(extra: list[str]) -> argparse.Namespace:
    ns = build_parser().parse_args(["webcam", "--no-window", *extra])
    ns.compile_mode = True  # with --compile: the graph is built before the first frame, not in the background
    return ns


def forward_only(args: argparse.Namespace, runner, frame: np.ndarray, iters: int) -> dict:
    """A plain forward of the same weights (no hooks), channels-last, on the pipeline's preprocessed input."""
    explainer = getattr(runner, "explainer", runner)
    plain = load_model(args.model, weights="default" if args.weights == "default" else None).module
    plain.load_state_dict(explainer.model.state_dict())
    plain = plain.to(explainer.device).to(memory_format=torch.channels_last).eval()
    x = explainer.preprocess(frame)
    with torch.inference_mode():
        for _ in range(10):  # warm-up: oneDNN picks and caches its kernels
            plain(x)
        ms = []
        for _ in range(iters):
            t = time.perf_counter()
            plain(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            ms.append((time.perf_counter() - t) * 1e3)
    med = statistics.median(ms)
    return {"median_ms": med, "fps": 1000.0 / med, "input": list(x.shape)}


class LoopSource:
    """The decoded clip looped in memory for ``n`` frames (a file-mode source: no drops), sampling RSS."""

    live = False

    def __init__(self, images: list[np.ndarray], n: int, every: int) -> None:
        self.images, self.n, self.every = images, n, every
        self.samples: list[tuple[int, float]] = []

    def __iter__(self):
        for k in range(self.n):
            if k % self.every == 0:
                self.samples.append((k, rss_mb()))
            yield Frame(k, k / 30.0, time.perf_counter(), self.images[k % len(self.images)])
        self.samples.append((self.n, rss_mb()))

    def close(self) -> None:
        pass


class EngineCount:
    """The runner, counting which engine drew each call (``result.engine``: compiled, eager, ...)."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.engines: dict[str, int] = {}
        self.explainer = getattr(runner, "explainer", runner)

    def explain(self, *args, **kwargs):
        r = self.runner.explain(*args, **kwargs)
        key = getattr(r, "engine", None) or "eager"
        self.engines[key] = self.engines.get(key, 0) + 1
        return r

    def __getattr__(self, name: str):
        return getattr(self.runner, name)


def session_run(args: argparse.Namespace, runner, source, live: bool) -> dict:
    """One LiveSession run into a null sink; the summary ``rtsal webcam --stats-json`` would write, plus
    ``engines``: how many calls each engine served."""
    before = torch.get_num_threads()
    apply_threads(args)  # as `rtsal webcam` does: --streams/--threads, else the auto rule
    counted = EngineCount(runner)
    session = LiveSession(FrameExplainer(counted, args.method), live_settings(args), NullSink(), None,
                          live=live)
    session.close = lambda: None  # type: ignore[method-assign]  # keep the runner for the next run
    try:
        stats = session.run(source)
    finally:
        torch.set_num_threads(before)
    out = session.summary(stats)
    out["engines"] = counted.engines
    return out


def engine_only(runner, frame: np.ndarray, seconds: float, streams: int, threads: int) -> dict:
    """The engine alone (``explain`` of the 640x480 uint8 frame: preprocess, forward, maps at model size),
    no pipeline: ``streams`` threads calling it in a loop for about ``seconds``, ``threads`` torch threads
    each. Frames/s of all of them together, and the engine of the last call."""
    import threading

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    counts = [0] * streams
    start = threading.Barrier(streams + 1)
    stop_at = [0.0]

    def work(k: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            runner.explain(frame, size="model")
            counts[k] += 1

    try:
        for _ in range(3):
            runner.explain(frame, size="model")  # warm-up at this thread count
        ts = [threading.Thread(target=work, args=(k,)) for k in range(streams)]
        for t in ts:
            t.start()
        t0 = time.perf_counter()
        stop_at[0] = t0 + seconds
        start.wait()
        for t in ts:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    n = sum(counts)
    engine = getattr(runner.explain(frame, size="model"), "engine", None)
    return {"streams": streams, "threads": threads, "frames": n, "fps": n / elapsed, "engine": engine}


def parse_configs(text: str, cores: int) -> list[tuple[str, str]]:
    """``auto,1x1,2x1`` -> [("auto", None), ("1", "1"), ("2", "1")] as --streams/--threads strings."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if item == "auto":
            out.append(("auto", ""))
        elif item:
            st, th = item.split("x")
            out.append((st, th))
    return out


def run_variant(a: argparse.Namespace, cores: int | None, omp: str) -> dict:
    """This benchmark again in a child process on ``cores`` cores (taskset) with ``OMP_WAIT_POLICY=omp``."""
    import subprocess

    out = Path(tempfile.mkdtemp(prefix="rtsal-variant-")) / "v.json"
    cmd = [sys.executable, __file__, "--frames", str(a.frames), "--model", a.model, "--method", a.method,
           "--size", str(a.size), "--configs", a.configs, "--model-seconds", str(a.model_seconds),
           "--rt-fps", "", "--json", str(out), "--child", "--compile", a.compile, "--backend", a.backend]
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if omp != "default":
        env["OMP_WAIT_POLICY"] = omp
    if cores:
        cmd = ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:cores]), *cmd]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def measure(a: argparse.Namespace, compiled: bool, cores: int, clip: Path, images: list, tmp: Path) -> dict:
    """Every row of the benchmark on one engine (eager, or compiled with its graph ready before timing)."""
    engine = ["--model", a.model, "--method", a.method, "--size", str(a.size),
              "--compile" if compiled else "--no-compile", "--backend", a.backend if compiled else "torch"]
    if a.model != "efficientnet-lite0":
        engine += ["--weights", "none"]  # only lite0 has weights offline; speed does not depend on them

    args = webcam_args(["--source", str(clip), "--no-realtime", *engine])
    runner = make_runner(args)
    auto = plan_streams("auto", None, cores=cores)
    result: dict = {"meta": {
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "cores": cores, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "date": time.strftime("%Y-%m-%d %H:%M"), "model": a.model, "method": a.method, "size": a.size,
        "frame": list(SIZE), "frames": a.frames, "auto": list(auto), "compiled": compiled,
        "backend": a.backend if compiled else "torch",
    }}
    try:
        t_build = time.perf_counter()
        runner.explain(images[0], size="model")  # warm-up; the compiled graph of this key is built or loaded
        result["meta"]["first_call_s"] = time.perf_counter() - t_build
        decode_t, decode_c = time.perf_counter(), time.thread_time()
        n_decoded = sum(1 for _ in StreamSource(str(clip), realtime=False))
        result["decode"] = {"fps": n_decoded / (time.perf_counter() - decode_t),
                            "cpu_ms": (time.thread_time() - decode_c) * 1e3 / max(1, n_decoded)}
        torch.set_num_threads(cores)
        fwd = forward_only(args, runner, images[0], a.forward_iters)
        # the model's own rate: the same engine, same input, all cores, no pipeline; in one thread of all
        # the cores and in the auto rule's streams, and the faster of the two is the reference (a 2-thread
        # OpenMP team in a worker thread runs at about half speed here: libgomp stops spinning between
        # parallel regions once more threads use OpenMP than there are cores)
        one = engine_only(runner, images[0], a.model_seconds, 1, cores)
        many = engine_only(runner, images[0], a.model_seconds, auto.streams, auto.threads)
        model_only = max(one, many, key=lambda r: r["fps"])
        result["forward_only"] = fwd
        result["model_only"] = model_only
        result["model_only_one_stream"] = one
        result["model_only_streams"] = many
        configs = parse_configs(a.configs, cores)
        if configs:  # untimed: the streams' threads warm up (their first frames are slower) before timing
            st, th = configs[0]
            extra = ["--streams", st] + (["--threads", th] if th else [])
            session_run(webcam_args(["--source", str(clip), "--no-realtime", *engine, *extra]), runner,
                        StreamSource(str(clip), realtime=False), live=False)
        runs = []
        for st, th in configs:
            extra = ["--streams", st] + (["--threads", th] if th else [])
            e_args = webcam_args(["--source", str(clip), "--no-realtime", *engine, *extra])
            e = session_run(e_args, runner, StreamSource(str(clip), realtime=False), live=False)
            e["config"] = f"{st}x{th}" if th else st
            e["ratio_to_model_only"] = e["fps"] / model_only["fps"]
            runs.append(e)
        result["end_to_end"] = runs
        result["model_only_after"] = engine_only(runner, images[0], a.model_seconds, model_only["streams"],
                                                 model_only["threads"])

        realtime = []
        for rate in [float(r) for r in a.rt_fps.split(",") if r]:
            n = max(2, round(rate * a.rt_seconds))
            rt_clip = make_clip(tmp / f"rt{rate:g}.mp4", n, rate)
            rt_args = webcam_args(["--source", str(rt_clip), *engine])
            s = session_run(rt_args, runner, StreamSource(str(rt_clip), realtime=True), live=True)
            period = 1000.0 / rate
            s["source_fps"] = rate
            s["latency_periods"] = {k: (v / period if v is not None else None)
                                    for k, v in s["latency_ms"].items()}
            realtime.append(s)
        result["realtime"] = realtime

        if a.soak:
            src = LoopSource(images, a.soak, a.soak_every)
            soak_args = webcam_args(["--source", str(clip), "--no-realtime", *engine])
            s = session_run(soak_args, runner, src, live=False)
            samples = src.samples
            warm = samples[1] if len(samples) > 2 else samples[0]  # after the first --soak-every frames
            last = samples[-1]
            peak = max(mb for _, mb in samples)
            result["soak"] = {
                "frames": a.soak, "fps": s["fps"], "samples": samples,
                "rss_warm_mb": warm[1], "rss_last_mb": last[1], "rss_peak_mb": peak,
                "growth_pct": 100.0 * (last[1] - warm[1]) / warm[1],
                "peak_over_warm_pct": 100.0 * (peak - warm[1]) / warm[1],
            }
    finally:
        runner.close()
    if "soak" in result:  # every thread the runs started has ended (pipeline stages, builders)
        import threading

        time.sleep(0.5)
        result["soak"]["threads_after_exit"] = sorted(
            t.name for t in threading.enumerate() if t is not threading.main_thread())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--method", default="fastcam")
    p.add_argument("--size", type=int, default=224, help="model input short side")
    p.add_argument("--frames", type=int, default=300, help="frames in each end-to-end run")
    p.add_argument("--clip-fps", type=float, default=30.0)
    p.add_argument("--configs", default="auto,1x2,2x1",
                   help="end-to-end runs as STREAMSxTHREADS (or auto), e.g. 1x1,1x2,2x1,auto")
    p.add_argument("--model-seconds", type=float, default=5.0, help="length of each model-only run")
    p.add_argument("--rt-fps", default="10,15,30", help="real-time rates to play the clip at (auto streams)")
    p.add_argument("--rt-seconds", type=float, default=10.0, help="length of each real-time run")
    p.add_argument("--forward-iters", type=int, default=50)
    p.add_argument("--soak", type=int, default=0, metavar="N", help="frames in the memory soak (0: none)")
    p.add_argument("--soak-every", type=int, default=500)
    p.add_argument("--variants", default="",
                   help="also rerun in child processes: CORES:OMP,... e.g. 1:default,2:default,2:PASSIVE "
                   "(taskset to CORES cores, OMP_WAIT_POLICY=OMP; 0 cores = all)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--compile", choices=("off", "on", "both"), default="off",
                   help="the compiled engine in every run, model-only included (on), or the eager rows "
                   "then the compiled rows in one run (both) (default: off)")
    p.add_argument("--backend", default="compiled",
                   choices=("compiled", "onnxruntime", "openvino", "auto"),
                   help="the graph backend of the --compile rows (default: compiled, AOTInductor)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "pipeline.json"))
    a = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="rtsal-bench-"))
    clip = make_clip(tmp / "clip.mp4", a.frames, a.clip_fps)
    images = [f.image for f in StreamSource(str(clip), realtime=False)]
    modes = {"off": [False], "on": [True], "both": [False, True]}[a.compile]
    results = [measure(a, compiled, cores, clip, images, tmp) for compiled in modes]
    result = results[-1]
    if len(results) > 1:
        result = {**results[0], "compiled_run": results[1]}

    variants = []
    for v in [x for x in a.variants.split(",") if x and not a.child]:
        c, omp = v.split(":")
        r = run_variant(a, int(c) or None, omp)
        for rr in (r, r.get("compiled_run")):  # each engine the child ran
            if rr is None:
                continue
            variants.append({
                "cores": rr["meta"]["cores"], "omp": omp,
                "engine": "compiled" if rr["meta"].get("compiled") else "eager",
                "model_only_fps": rr["model_only"]["fps"],
                "runs": [{k: e[k] for k in ("config", "streams", "fps", "ratio_to_model_only", "cpu_ms",
                                             "cpu_ms_process_per_frame")} for e in rr["end_to_end"]]})
    result["variants"] = variants

    for r in results:
        print_table(r)
    if len(results) > 1:
        print_side_by_side(results[0], results[1])
    print_variants(variants)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


def print_variants(variants: list[dict]) -> None:
    """The same runs on fewer cores (taskset) or another OpenMP wait policy, in child processes."""
    if not variants:
        return
    print("\n| cores | OMP_WAIT_POLICY | engine | model only frames/s | --streams | frames/s | vs model only "
          "| CPU ms/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for v in variants:
        for e in v["runs"]:
            print(f"| {v['cores']} | {v['omp']} | {v.get('engine', 'eager')} | {v['model_only_fps']:.1f} "
                  f"| {e['config']} ({e['streams']}) | {e['fps']:.1f} "
                  f"| {100 * e['ratio_to_model_only']:.0f}% | {e['cpu_ms_process_per_frame']:.1f} |")


def print_table(r: dict) -> None:
    m, f, mo = r["meta"], r["forward_only"], r["model_only"]
    print(f"\n{m['model']} / {m['method']} ({'compiled' if m.get('compiled') else 'eager'} engine), "
          f"frames {m['frame'][0]}x{m['frame'][1]} -> model input "
          f"{'x'.join(map(str, f['input'][2:]))}, {m['cores']} cores, "
          f"OMP_WAIT_POLICY {m['omp_wait_policy']}, "
          f"auto = {m['auto'][0]} stream(s) x {m['auto'][1]} thread(s)\n")
    print("| run | frames/s | vs model only | latency median / p95 ms | dropped | CPU ms/frame (process) "
          "| RSS MB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| plain forward, {m['cores']} threads | {f['fps']:.1f} | | | | | |")
    print(f"| **model only** (engine, {mo['streams']} x {mo['threads']} threads, no pipeline: the faster "
          f"below) | {mo['fps']:.1f} | 100% | | | | |")
    for key in ("model_only_one_stream", "model_only_streams"):
        ms = r.get(key)
        if ms:
            print(f"| model only, {ms['streams']} stream(s) x {ms['threads']} thread(s) | {ms['fps']:.1f} "
                  f"| {100 * ms['fps'] / mo['fps']:.0f}% | | | | |")
    print(f"| model only again after the runs | {r['model_only_after']['fps']:.1f} | "
          f"{100 * r['model_only_after']['fps'] / mo['fps']:.0f}% | | | | |")
    print(f"| decode only | {r['decode']['fps']:.1f} | | | | {r['decode']['cpu_ms']:.1f} | |")

    def row(name: str, s: dict, ratio: str) -> str:
        lat = s["latency_ms"]
        return (f"| {name} | {s['fps']:.1f} | {ratio} | {lat['median']:.0f} / {lat['p95']:.0f} "
                f"| {s['dropped']} of {s['captured']} | {s['cpu_ms_process_per_frame']:.1f} "
                f"| {s['rss_mb']:.0f} |")

    for e in r["end_to_end"]:
        print(row(f"end to end, --streams {e['config']} ({e['streams']} x {e['threads_per_stream']})", e,
                  f"{100 * e['ratio_to_model_only']:.0f}%"))
    for s in r.get("realtime", []):
        lp = s["latency_periods"]
        print(row(f"real time {s['source_fps']:g} fps source, auto", s,
                  f"latency {lp['median']:.2f} / {lp['p95']:.2f} periods"))
    stages = ["capture", "infer", "maps to host", "resize", "view", "labels", "hud", "render"]
    print("\nCPU ms per frame of each stage's own thread (time.thread_time; infer excludes its OpenMP "
          "helpers; render = maps to host + resize + view + labels + hud + the rest):\n")
    print("| run | " + " | ".join(stages) + " |")
    print("|---|" + "---|" * len(stages))
    for e in r["end_to_end"]:
        c = e["cpu_ms"] or {}
        print(f"| --streams {e['config']} | " + " | ".join(
            f"{c[k]:.1f}" if k in c else "-" for k in stages) + " |")
    if "soak" in r:
        s = r["soak"]
        print(f"\nsoak: {s['frames']} frames at {s['fps']:.1f} fps; "
              f"resident memory {s['rss_warm_mb']:.0f} MB after warm-up -> {s['rss_last_mb']:.0f} MB "
              f"at the end ({s['growth_pct']:+.2f}%), "
              f"peak {s['rss_peak_mb']:.0f} MB ({s['peak_over_warm_pct']:+.2f}%); threads left after the "
              f"runs: {len(s.get('threads_after_exit', []))} {s.get('threads_after_exit', '')}")


def print_side_by_side(eager: dict, comp: dict) -> None:
    """The end-to-end runs of both engines, each against its own engine's model-only rate."""
    print(f"\neager vs compiled engine (model only: eager {eager['model_only']['fps']:.1f}, compiled "
          f"{comp['model_only']['fps']:.1f} frames/s; compiled graph ready after "
          f"{comp['meta'].get('first_call_s', float('nan')):.1f} s, before timing)\n")
    print("| --streams | eager frames/s | vs eager model only | compiled frames/s | vs compiled model only "
          "| compiled frames drawn by |")
    print("|---|---|---|---|---|---|")
    for e, c in zip(eager["end_to_end"], comp["end_to_end"], strict=True):
        drawn = ", ".join(f"{k} {v}" for k, v in sorted(c.get("engines", {}).items()))
        print(f"| {e['config']} ({e['streams']} x {e['threads_per_stream']}) | {e['fps']:.1f} "
              f"| {100 * e['ratio_to_model_only']:.0f}% | {c['fps']:.1f} "
              f"| {100 * c['ratio_to_model_only']:.0f}% | {drawn} |")


if __name__ == "__main__":
    sys.exit(main())
