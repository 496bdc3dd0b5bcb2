"""Live and video throughput per backend: the live pipeline on the bundled clip at 640x480 against the
backend's own explained rate, and ``rtsal video`` on a 1280x720 clip, for every installed backend.

Both clips are made here from the bundled ``rtsal/data/demo.mp4`` (480x360, 15 fps, 184 frames): each frame
scaled to cover the size and centre-cropped, re-timed at 30 fps (so a 30 fps clip, as a camera gives),
H.264 crf 20 preset medium. The live clip plays the demo ``--live-loops`` times in a row.

Each backend runs in its own child process (no runtime's threads or memory left over for the next one);
``--rounds`` rotates the order and the table shows medians over the rounds. A child:

1. builds the backend as the commands do (``--backend NAME``, graph built or loaded from the warm cache
   before the first frame, ``--streams auto``: 2 streams of 1 thread on 2 cores) and warms it up;
2. **explained rate**: ``Explainer.explain`` of one 640x480 frame (preprocess, forward with the maps at
   model size) in a loop for ``--seconds``, in the streams the pipeline uses (each warmed up), no pipeline;
   taken before and after the live run, the mean is the reference;
3. **live**: ``rtsal webcam --source CLIP --no-realtime --no-window`` (its session: decode thread, the
   inference streams, render thread drawing overlay, top-3 labels and the HUD into a null sink); frames/s
   as ``--stats-json`` reports it, and that over the explained rate;
4. **video**: ``rtsal video CLIP720 -o OUT.mp4`` (decode, infer, draw, x264 ``veryfast`` encode), its frames/s
   and multiple of real time, the engine that drew the frames, CPU ms per frame of the process and of each
   stage's own thread, and the explained rate of the same batch of 720p frames alone (``--batch``).

CPU milliseconds per frame are reported beside the wall-clock figures: on a shared machine they move much
less than frames per second.

Usage::

    python benchmarks/pipeline_backends.py                      # all installed backends, 1 round
    python benchmarks/pipeline_backends.py --backends compiled,openvino --rounds 3 --seconds 4
    python benchmarks/pipeline_backends.py --quick              # a short check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("torch", "compiled", "onnxruntime", "openvino")
DEMO = ROOT / "rtsal" / "data" / "demo.mp4"
LIVE_SIZE = (640, 480)
VIDEO_SIZE = (1280, 720)
FPS = 30


def make_clip(path: Path, size: tuple[int, int], loops: int = 1, limit: int | None = None) -> Path:
    """The bundled demo clip scaled to cover ``size`` = (W, H), centre-cropped, at 30 fps, ``loops`` times."""
    import cv2

    from rtsal.io.video import VideoReader, VideoWriter

    w, h = size
    with VideoReader(DEMO) as r:
        images = [f.image for f in r][:limit]
    k = 0
    with VideoWriter(path, rate=Fraction(FPS), crf=20, preset="medium") as writer:
        for _ in range(loops):
            for img in images:
                ih, iw = img.shape[:2]
                s = max(w / iw, h / ih)
                big = cv2.resize(img, (round(iw * s), round(ih * s)), interpolation=cv2.INTER_LINEAR)
                y, x = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
                writer.write(big[y : y + h, x : x + w], pts=k / FPS)
                k += 1
    return path


def installed(name: str) -> bool:
    import importlib.util
    import shutil

    if name == "onnxruntime":
        return importlib.util.find_spec("onnxruntime") is not None
    if name == "openvino":
        return importlib.util.find_spec("openvino") is not None
    if name == "compiled":
        return any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    return True


# -- the child: one backend --------------------------------------------------------------------------------
def explained_rate(runner, images, seconds: float, streams: int) -> dict:
    """``runner.explain(images)`` in ``streams`` threads for about ``seconds``: frames/s of all together."""
    import threading

    n_images = 1 if images.ndim == 3 else images.shape[0]
    counts = [0] * streams
    ready, go = threading.Barrier(streams + 1), threading.Barrier(streams + 1)
    stop_at = [0.0]

    def work(k: int) -> None:
        for _ in range(3):  # each thread's first calls set up its own state (OpenMP team, runner): untimed
            runner.explain(images, size="model")
        ready.wait()
        go.wait()
        while time.perf_counter() < stop_at[0]:
            runner.explain(images, size="model")
            counts[k] += n_images

    threads = [threading.Thread(target=work, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    ready.wait()  # every thread warmed up
    t0, c0 = time.perf_counter(), time.process_time()
    stop_at[0] = t0 + seconds
    go.wait()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = sum(counts)
    engine = getattr(runner.explain(images, size="model"), "engine", None)
    # CPU of the whole process (a runtime's own worker threads included), per frame
    return {"fps": n / elapsed, "frames": n, "cpu_ms_per_frame": 1e3 * cpu / max(1, n), "engine": engine}


def mean_rate(before: dict, after: dict) -> dict:
    """The mean of two explained-rate runs, with both kept."""
    return {"fps": (before["fps"] + after["fps"]) / 2,
            "cpu_ms_per_frame": (before["cpu_ms_per_frame"] + after["cpu_ms_per_frame"]) / 2,
            "engine": after["engine"], "before": before, "after": after}


def child(a: argparse.Namespace) -> dict:
    import numpy as np

    from rtsal.cli import build_parser
    from rtsal.commands.common import apply_threads, make_runner
    from rtsal.commands.video import settings_of
    from rtsal.commands.webcam import live_settings
    from rtsal.frame.infer import FrameExplainer
    from rtsal.frame.live import LiveSession
    from rtsal.frame.video_job import VideoJob
    from rtsal.io.sinks import NullSink
    from rtsal.io.sources import StreamSource
    from rtsal.io.video import VideoReader

    backend = a.child
    common = ["--backend", backend, "--model", a.model]
    live_args = build_parser().parse_args(
        ["webcam", "--no-window", "--source", a.live_clip, "--no-realtime", *common])
    live_args.compile_mode = True  # the graph built (or loaded) before the first frame: every frame timed is
    out = Path(a.out_dir) / f"out-{backend}.mp4"
    video_args = build_parser().parse_args(
        ["video", a.video_clip, "-o", str(out), "--no-progress", *common, *a.video_extra.split()])
    video_args.compile_mode = True
    result: dict = {"backend": backend}
    apply_threads(live_args)
    apply_threads(video_args)
    t0 = time.perf_counter()
    runner = make_runner(live_args)
    result["load_s"] = time.perf_counter() - t0
    with VideoReader(a.live_clip) as r:
        frame480 = next(iter(r)).image
    with VideoReader(a.video_clip) as r:
        frames720 = [f.image for _, f in zip(range(video_args.batch), r, strict=False)]
    batch720 = frames720[0] if len(frames720) == 1 else np.stack(frames720)
    try:
        for images in (frame480, batch720):  # warm-up: graphs of both sizes built or loaded, kernels picked
            for _ in range(5):
                runner.explain(images, size="model")
        streams = live_args.streams_n
        result["streams"], result["threads"] = streams, int(__import__("torch").get_num_threads())
        # each explained rate is taken before and after its end-to-end run (the mean is the reference): on a
        # shared machine the load moves between the two
        before = explained_rate(runner, frame480, a.seconds, streams)

        # live: rtsal webcam --source CLIP --no-realtime --no-window (its session, into a null sink)
        session = LiveSession(FrameExplainer(runner, live_args.method), live_settings(live_args), NullSink(),
                              None, live=False)
        session.close = lambda: None  # type: ignore[method-assign]  # the runner serves the video run too
        stats = session.run(StreamSource(a.live_clip, realtime=False))
        live = session.summary(stats)
        result["live"] = {k: live[k] for k in ("fps", "rendered", "dropped", "engines", "cpu_ms",
                                               "cpu_ms_process_per_frame", "latency_ms", "streams")}
        result["explain_480"] = mean_rate(before, explained_rate(runner, frame480, a.seconds, streams))
        result["live"]["vs_explained"] = live["fps"] / result["explain_480"]["fps"]

        before = explained_rate(runner, batch720, a.seconds, streams)

        # video: rtsal video CLIP720 -o OUT.mp4
        with VideoJob(video_args.input, video_args.output, settings_of(video_args)) as job:
            summary = job.run(FrameExplainer(runner, video_args.method))
        result["video"] = {
            "fps": summary.fps, "realtime": summary.realtime, "frames": summary.frames,
            "engines": summary.engines, "batch": video_args.batch,
            "cpu_ms": summary.stats["cpu_ms"] if summary.stats else None,
            "cpu_ms_process_per_frame": summary.stats["cpu_ms_process_per_frame"] if summary.stats else None,
            "bytes": out.stat().st_size,
        }
        result["explain_720"] = mean_rate(before, explained_rate(runner, batch720, a.seconds, streams))
        result["video"]["vs_explained"] = summary.fps / result["explain_720"]["fps"]
    finally:
        runner.close()
    return result


# -- the parent ---------------------------------------------------------------------------------------------
def run_child(a: argparse.Namespace, backend: str, clips: tuple[Path, Path], tmp: Path) -> dict:
    out = tmp / f"result-{backend}.json"
    cmd = [sys.executable, __file__, "--child", backend, "--model", a.model, "--seconds", str(a.seconds),
           "--live-clip", str(clips[0]), "--video-clip", str(clips[1]), "--out-dir", str(tmp),
           "--video-extra", a.video_extra, "--result", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=a.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"backend": backend, "error": f"timed out after {a.timeout} s"}
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0 or not out.exists():
        return {"backend": backend, "error": log.strip().splitlines()[-1] if log.strip() else "failed"}
    return json.loads(out.read_text())


def med(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict]) -> dict:
    """Medians over the rounds of one backend."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"]}

    def m(*path: str) -> float | None:
        vals = []
        for r in ok:
            v = r
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            vals.append(v)
        return med(vals)

    return {
        "rounds": len(ok),
        "explain_480_fps": m("explain_480", "fps"),
        "explain_480_cpu_ms": m("explain_480", "cpu_ms_per_frame"),
        "live_fps": m("live", "fps"),
        "live_vs_explained": m("live", "vs_explained"),
        "live_cpu_ms": m("live", "cpu_ms_process_per_frame"),
        "explain_480_cpu_ms_process": m("explain_480", "cpu_ms_per_frame"),
        # the ratio of CPU per frame: what live / explained is when the cores are the limit (robust to load)
        "live_vs_explained_cpu": med([r["explain_480"]["cpu_ms_per_frame"]
                                      / r["live"]["cpu_ms_process_per_frame"] for r in ok]),
        "explain_720_fps": m("explain_720", "fps"),
        "video_fps": m("video", "fps"),
        "video_realtime": m("video", "realtime"),
        "video_vs_explained": m("video", "vs_explained"),
        "video_cpu_ms": m("video", "cpu_ms_process_per_frame"),
        # the multiple of real time the video's CPU per frame allows on this machine's cores at best
        "video_realtime_cpu_bound": med([(os.cpu_count() or 1) * 1e3 / FPS
                                         / r["video"]["cpu_ms_process_per_frame"] for r in ok]),
        "engine": ok[-1]["explain_480"]["engine"],
        "video_engines": ok[-1]["video"]["engines"],
        "live_engines": ok[-1]["live"]["engines"],
        "streams": f"{ok[-1]['streams']}x{ok[-1]['threads']}",
    }


def print_table(summary: dict) -> None:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    print("| backend | explained fps 640x480 | live fps | live / explained | CPU ms/frame explained / live "
          "| live / explained by CPU | video 720p fps | x real time | video CPU ms/frame "
          "| x real time CPU-bound | drew the video |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        if "error" in s:
            print(f"| {name} | error: {s['error']} |")
            continue
        drew = ", ".join(f"{k} {v}" for k, v in s["video_engines"].items())
        print(f"| {name} | {f(s['explain_480_fps'], '.1f')} | {f(s['live_fps'], '.1f')} "
              f"| {f(s['live_vs_explained'], '.0%')} "
              f"| {f(s['explain_480_cpu_ms_process'], '.1f')} / {f(s['live_cpu_ms'], '.1f')} "
              f"| {f(s['live_vs_explained_cpu'], '.0%')} "
              f"| {f(s['video_fps'], '.1f')} | {f(s['video_realtime'], '.2f')} "
              f"| {f(s['video_cpu_ms'], '.1f')} | {f(s['video_realtime_cpu_bound'], '.2f')} | {drew} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all installed)")
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each explained-rate loop")
    p.add_argument("--rounds", type=int, default=1, help="runs of every backend, order rotated")
    p.add_argument("--live-loops", type=int, default=3, help="times the demo plays in the live clip")
    p.add_argument("--frames", type=int, default=None, help="use only this many frames of the demo")
    p.add_argument("--video-extra", default="", help="more `rtsal video` options, e.g. '--preset ultrafast'")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds each child may run")
    p.add_argument("--quick", action="store_true", help="30 frames, 1 s loops: checks the script")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "pipeline_backends.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--live-clip", help=argparse.SUPPRESS)
    p.add_argument("--video-clip", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        Path(a.result).write_text(json.dumps(child(a)))
        return 0
    if a.quick:
        a.frames, a.seconds, a.live_loops = a.frames or 30, 1.0, 1
    wanted = [b.strip() for b in a.backends.split(",") if b.strip()]
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        p.error(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    backends = [b for b in wanted if installed(b)]
    missing = [b for b in wanted if b not in backends]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")
    runs: dict[str, list[dict]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory(prefix="rtsal-pb-") as tmp_name:
        tmp = Path(tmp_name)
        clips = (make_clip(tmp / "live-640x480.mp4", LIVE_SIZE, a.live_loops, a.frames),
                 make_clip(tmp / "video-1280x720.mp4", VIDEO_SIZE, 1, a.frames))
        for r in range(a.rounds):
            order = backends[r % len(backends):] + backends[: r % len(backends)] if backends else []
            for b in order:
                t0 = time.perf_counter()
                res = run_child(a, b, clips, tmp)
                runs[b].append(res)
                what = res.get("error") or (f"live {res['live']['fps']:.1f} fps "
                                            f"({res['live']['vs_explained']:.0%}), video "
                                            f"{res['video']['realtime']:.2f}x real time")
                print(f"round {r + 1} {b}: {what} [{time.perf_counter() - t0:.0f} s]", flush=True)
    summary = {b: summarise(rs) for b, rs in runs.items()}
    print()
    print_table(summary)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    given = sys.argv[1:] if argv is None else argv
    record = {
        "command": " ".join(["python benchmarks/pipeline_backends.py", *given]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_at_end": load},
        "settings": {"model": a.model, "seconds": a.seconds, "rounds": a.rounds, "live_loops": a.live_loops,
                     "frames": a.frames, "video_extra": a.video_extra, "clip_fps": FPS,
                     "live_size": LIVE_SIZE, "video_size": VIDEO_SIZE},
        "summary": summary,
        "runs": runs,
    }
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
