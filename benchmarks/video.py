"""Throughput of ``rtsal video``: frames/s and multiple of real time on a 720p 25 fps H.264 clip with audio.

The clip is made here from the bundled photographs (slow pans and zooms, 48 kHz stereo AAC). In the same run
it measures each stage alone, so the slowest one is visible:

- decode: PyAV decode + conversion to RGB, per decoder ``thread_type``;
- encode: RGB -> YUV + libx264 per preset (the stage ``rtsal video`` runs after drawing);
- model: preprocess + one forward pass + FastCAM maps (model resolution), per batch size;
- pipeline: the whole ``rtsal video`` job (decode, infer, draw, encode, audio copy on three threads) per
  batch size, with the default view (overlay + top-3 labels).

Usage::

    python benchmarks/video.py               # 720p, 8 s, batches 1,2,4,8 -> benchmarks/results/video.json
    python benchmarks/video.py --quick       # a tiny clip to check the script
    python benchmarks/video.py --example docs/video-frame.png   # also save one output frame for the README
    python benchmarks/video.py --compile both --frames 120 --batches 1 --stages model,pipeline

``--compile on`` runs the model rows and the pipeline runs on the compiled engine (the same settings as the
pipeline's ``rtsal video``; each graph built, or loaded from the cache, in an untimed warm-up call, so every
timed frame is a compiled one); ``both`` measures the eager and the compiled rows in one run, each pipeline
run against the best model row of its own engine.
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

import av
import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.cli import build_parser  # noqa: E402
from rtsal.commands.common import make_runner  # noqa: E402
from rtsal.commands.video import settings_of  # noqa: E402
from rtsal.frame.infer import FrameExplainer  # noqa: E402
from rtsal.frame.video_job import VideoJob  # noqa: E402
from rtsal.io.video import VideoReader, VideoWriter  # noqa: E402

PHOTOS = ("coffee", "chelsea", "rocket", "astronaut")
AUDIO_RATE = 48000


def photo(name: str) -> np.ndarray:
    image = cv2.imread(str(ROOT / "rtsal" / "data" / f"{name}.jpg"))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def pan_frame(img: np.ndarray, u: float, width: int, height: int, k: int) -> np.ndarray:
    """Frame at progress ``u`` (0..1) of a pan (even k) or a zoom (odd k) over ``img``, as width x height."""
    h, w = img.shape[:2]
    aspect = width / height
    if k % 2 == 0:  # pan across at 80 % of the height
        ch = int(h * 0.8)
        cw = min(w, int(ch * aspect))
        x = int((w - cw) * u)
        y = (h - ch) // 2
    else:  # zoom in towards the centre
        s = 1.0 - 0.4 * u
        cw = min(w, int(h * aspect))
        cw, ch = int(cw * s), int(cw * s / aspect)
        x, y = (w - cw) // 2, (h - ch) // 2
    return cv2.resize(img[y : y + ch, x : x + cw], (width, height), interpolation=cv2.INTER_LINEAR)


def make_clip(path: Path, seconds: float, fps: int, width: int, height: int) -> int:
    """Write the benchmark clip (H.264, crf 20, preset medium, as a camera or phone would; AAC stereo)."""
    n = int(round(seconds * fps))
    per_photo = max(1, n // len(PHOTOS))
    images = [photo(p) for p in PHOTOS]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "medium"})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        for i in range(n):
            k = min(i // per_photo, len(images) - 1)
            u = (i - k * per_photo) / max(1, per_photo - 1)
            f = av.VideoFrame.from_ndarray(
                pan_frame(images[k], min(u, 1.0), width, height, k), format="rgb24"
            )
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        samples = int(n / fps * AUDIO_RATE)
        t = np.arange(samples) / AUDIO_RATE
        tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
        pcm = np.stack([tone, np.roll(tone, 100)]).astype(np.float32)
        for s in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pcm[:, s : s + 1024]), format="fltp", layout="stereo"
            )
            af.sample_rate, af.pts, af.time_base = AUDIO_RATE, s, Fraction(1, AUDIO_RATE)
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return n


def bench_decode(path: Path, thread_type: str) -> tuple[float, float]:
    """Frames/s of decode + RGB conversion, and CPU ms per frame of the whole process (codec threads too:
    what it takes from the other stages, and robust to other load on the machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    with VideoReader(path, thread_type=thread_type) as r:
        n = sum(1 for _ in r)
    return n / (time.perf_counter() - t0), (time.process_time() - c0) * 1e3 / max(1, n)


def bench_encode(frames: list[np.ndarray], out: Path, preset: str, fps: int) -> tuple[float, int, float]:
    """Frames/s of RGB -> YUV + libx264 at ``preset`` (crf 23), the file size in bytes, and CPU ms per frame
    of the whole process (x264's threads too)."""
    t0, c0 = time.perf_counter(), time.process_time()
    with VideoWriter(out, preset=preset, rate=fps, time_base=Fraction(1, fps)) as w:
        for i, img in enumerate(frames):
            w.write(img, i / fps, 1 / fps)
    cpu = (time.process_time() - c0) * 1e3 / max(1, len(frames))
    return len(frames) / (time.perf_counter() - t0), out.stat().st_size, cpu


def bench_model(explainer, frames: list[np.ndarray], batch: int) -> tuple[float, float, str | None]:
    """Frames/s of preprocess + forward + FastCAM maps at model resolution (as ``rtsal video`` runs it), the
    seconds of the untimed warm-up call (a compiled graph is built or loaded there) and the engine that ran
    the timed calls (all of them, or the row is refused)."""
    stack = np.stack(frames[: max(batch, (len(frames) // batch) * batch)])
    t0 = time.perf_counter()
    explainer.explain(stack[:batch], size="model")  # warm-up at this batch size
    warm = time.perf_counter() - t0
    engines = set()
    t0 = time.perf_counter()
    n = 0
    for s in range(0, len(stack) - batch + 1, batch):
        engines.add(getattr(explainer.explain(stack[s : s + batch], size="model"), "engine", None))
        n += batch
    fps = n / (time.perf_counter() - t0)
    if len(engines) != 1:
        raise RuntimeError(f"the model row ran on several engines: {sorted(map(str, engines))}")
    return fps, warm, engines.pop()


def video_args(clip: Path, out: Path, backend: str, extra: list[str]) -> argparse.Namespace:
    """``rtsal video CLIP -o OUT --backend BACKEND ...`` as parsed by the CLI; a graph backend is built
    before the first frame (not in the background), so a timed run is all frames of that backend."""
    args = build_parser().parse_args(
        ["video", str(clip), "-o", str(out), "--no-progress", "--backend", backend,
         "--compile" if backend != "torch" else "--no-compile", *extra]
    )
    args.compile_mode = True
    return args


def run_job(
    clip: Path, out: Path, batch: int, preset: str, config: str, extra: list[str] | None = None,
    backend: str = "torch",
) -> dict:
    """One whole ``rtsal video`` job (model loaded and warmed up first, not timed) with ``--streams``/
    ``--threads`` from ``config`` (STREAMSxTHREADS or auto); its rates, counters and per-stage CPU."""
    from rtsal.commands.common import apply_threads

    st, _, th = config.partition("x")
    args = video_args(clip, out, backend, ["--batch", str(batch), "--preset", preset, "--streams", st]
                      + (["--threads", th] if th else []) + (extra or []))
    before = torch.get_num_threads()
    threads = apply_threads(args)
    try:
        with VideoJob(args.input, args.output, settings_of(args)) as job, \
                FrameExplainer(make_runner(args), args.method) as explainer:
            info = job.info
            explainer.explain(np.zeros((batch, info.height, info.width, 3), np.uint8))  # warm-up
            summary = job.run(explainer)
    finally:
        torch.set_num_threads(before)
    stats = summary.stats or {}
    duration = summary.span_s or summary.frames / (info.fps or 25)
    return {
        "config": config,
        "engine": backend,
        "streams": stats.get("streams"),
        "threads_per_stream": threads,
        "batch": batch,
        "preset": preset,
        "frames": summary.frames,
        "elapsed_s": round(summary.elapsed_s, 3),
        "fps": round(summary.fps, 2),
        "x_real_time": round(duration / summary.elapsed_s, 3),
        "latency_ms": stats.get("latency_ms"),
        "dropped": stats.get("dropped"),
        "rss_mb": stats.get("rss_mb"),
        "cpu_ms": stats.get("cpu_ms"),
        # CPU time of this process per frame (all threads): robust to other load on the machine; the
        # machine's cores can do at most cores * 1000 / cpu_ms frames/s of it
        "cpu_ms_per_frame": round(stats.get("cpu_ms_process_per_frame", float("nan")), 2),
        "cpu_bound_fps": round(_cores() * 1e3 / stats.get("cpu_ms_process_per_frame", float("inf")), 1),
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def save_example(clip: Path, png: Path, t: float, tmp: Path) -> None:
    """Explain a short stretch of the clip and save the frame at ``t`` seconds of the output as a PNG."""
    out = tmp / "example.mp4"
    args = build_parser().parse_args(
        [
            "video",
            str(clip),
            "-o",
            str(out),
            "--start",
            f"{max(0.0, t - 0.5):.3f}",
            "--end",
            f"{t + 0.5:.3f}",
            "--no-progress",
        ]
    )
    from rtsal.commands.video import run

    run(args)
    with av.open(str(out)) as c:
        frames = [f for f in c.decode(video=0)]
    mid = frames[len(frames) // 2].to_ndarray(format="rgb24")
    png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png), cv2.cvtColor(mid, cv2.COLOR_RGB2BGR))
    print(f"example frame: {png}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="clip length (default 8)")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--frames", type=int, default=None, help="clip length in frames (overrides --seconds)")
    p.add_argument("--size", default="1280x720", help="WxH of the clip (default 1280x720)")
    p.add_argument("--batches", default="1,2,4,8", help="batch sizes for the model and the pipeline")
    p.add_argument("--presets", default="ultrafast,superfast,veryfast,faster,medium", help="libx264 presets")
    p.add_argument(
        "--pipeline-preset", default="veryfast", help="preset of the pipeline runs (default veryfast)"
    )
    p.add_argument(
        "--threads",
        default=None,
        help="torch intra-op thread counts for the model-only rows, e.g. 1,2 (default: all cores, then 1)",
    )
    p.add_argument(
        "--configs",
        default="auto,1x2,2x1",
        help="pipeline runs as STREAMSxTHREADS or auto (default: auto,1x2,2x1)",
    )
    p.add_argument("--stages", default="decode,encode,model,pipeline", help="what to time (default: all)")
    p.add_argument("--decoders", default="AUTO,FRAME,SLICE,NONE", help="decoder thread types to time")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "video.json"))
    p.add_argument("--example", default=None, metavar="PNG", help="also save an output frame here")
    p.add_argument("--quick", action="store_true", help="tiny clip and few settings: checks the script")
    p.add_argument("--backends", default=None, metavar="A,B",
                   help="backends of the model rows and pipeline runs: torch,compiled,onnxruntime,openvino "
                   "(overrides --compile)")
    p.add_argument("--compile", choices=("off", "on", "both"), default="off",
                   help="the compiled engine in the model rows and the pipeline runs (on), or both engines "
                   "side by side (default: off)")
    a = p.parse_args()
    engines = {"off": ["torch"], "on": ["compiled"], "both": ["torch", "compiled"]}[a.compile]
    if a.backends:
        engines = a.backends.split(",")
    default_threads = _cores()
    if a.frames:
        a.seconds = a.frames / a.fps
    if a.quick:
        a.seconds, a.size, a.batches, a.presets, a.decoders = (
            1.0,
            "320x180",
            "1,2",
            "ultrafast,veryfast",
            "AUTO",
        )
        a.threads = a.threads or str(default_threads)
    threads = [int(t) for t in (a.threads or f"{default_threads},1").split(",")]
    threads = list(dict.fromkeys(threads))
    width, height = (int(v) for v in a.size.lower().split("x"))
    batches = [int(b) for b in a.batches.split(",")]
    presets = a.presets.split(",")
    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pyav": av.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads_default": default_threads,
            "processor": platform.processor() or platform.machine(),
        },
        "clip": {
            "width": width,
            "height": height,
            "fps": a.fps,
            "seconds": a.seconds,
            "codec": "h264",
            "audio": "aac 48 kHz stereo",
        },
    }
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="rtsal-bench-") as tmpdir:
        tmp = Path(tmpdir)
        clip = tmp / "clip.mp4"
        n = make_clip(clip, a.seconds, a.fps, width, height)
        results["clip"]["frames"] = n

        stages = set(a.stages.split(","))
        decode, decode_cpu = {}, {}
        for tt in a.decoders.split(",") if "decode" in stages else ():
            runs_tt = [bench_decode(clip, tt) for _ in range(2)]
            decode[tt] = round(statistics.median(r[0] for r in runs_tt), 2)
            decode_cpu[tt] = round(statistics.median(r[1] for r in runs_tt), 2)
            rows.append((f"decode -> RGB, thread_type={tt} [{decode_cpu[tt]:.1f} CPU ms]", decode[tt],
                         decode[tt] / a.fps))
        results["decode_fps"] = decode
        results["decode_cpu_ms"] = decode_cpu

        with VideoReader(clip) as r:
            frames = [f.image for f in r]
        sample = frames[: min(len(frames), 100)]
        encode = {}
        for preset in presets if "encode" in stages else ():
            fps, size, cpu = bench_encode(sample, tmp / f"enc-{preset}.mp4", preset, a.fps)
            kbit = round(size * 8 / (len(sample) / a.fps) / 1000, 1)
            encode[preset] = {"fps": round(fps, 2), "kbit_s": kbit, "cpu_ms": round(cpu, 2)}
            rows.append((f"encode x264 {preset} [{cpu:.1f} CPU ms, {kbit:.0f} kbit/s]", fps, fps / a.fps))
        results["encode"] = encode

        from rtsal.commands.common import make_runner as make_engine

        # the model rows: the engine the pipeline runs (same CLI settings, same model input size), alone
        model, model_engine, warmup_s = {}, {}, {}
        for backend in engines if "model" in stages else ():
            e = make_engine(video_args(clip, tmp / "unused.mp4", backend, []))
            try:
                for th in threads:
                    torch.set_num_threads(th)
                    for b in batches:
                        fps, warm, drawn = bench_model(e, frames[: min(len(frames), 64)], b)
                        key = f"{backend},threads={th},batch={b}"
                        model[key], model_engine[key], warmup_s[key] = round(fps, 2), drawn, round(warm, 2)
                        rows.append((f"model lite0 fastcam ({drawn}), batch {b}, {th} thread(s)", fps,
                                     fps / a.fps))
            finally:
                e.close()
        results["model_fps"] = model
        results["model_engine"] = model_engine
        results["model_warmup_s"] = warmup_s  # the untimed first call: a compiled graph built or loaded
        del frames, sample

        runs = []
        for backend in engines:
            for config in a.configs.split(",") if "pipeline" in stages else ():
                for b in batches:
                    r = run_job(clip, tmp / f"out-{b}.mp4", b, a.pipeline_preset, config, backend=backend)
                    runs.append(r)
                    plan = f"{r['streams']}x{r['threads_per_stream']}"
                    label = f"rtsal video ({r['engine']}), --streams {config} ({plan}), batch {b}"
                    rows.append((label, r["fps"], r["x_real_time"]))
        torch.set_num_threads(default_threads)
        refs = {name: max((v for k, v in model.items() if k.startswith(f"{name},")), default=None)
                for name in engines}
        results["model_only_fps"] = refs
        for r in runs:
            ref = refs[r["engine"]]
            r["ratio_to_model_only"] = round(r["fps"] / ref, 3) if ref else None
        results["pipeline"] = runs
        best = max(runs, key=lambda r: r["fps"]) if runs else None
        results["best"] = best
        results["target_x_real_time"] = 1.5
        results["meets_target"] = bool(best and best["x_real_time"] >= 1.5)
        if a.example:
            save_example(clip, Path(a.example), 0.35 * a.seconds, tmp)

    print(
        f"\nrtsal video on a {width}x{height} {a.fps} fps H.264 clip with audio, {n} frames "
        f"({os.cpu_count()} CPUs; pipeline: overlay view, libx264 {a.pipeline_preset} crf 23)"
    )
    print(f"{'stage':56s} {'frames/s':>9s} {'x real time':>12s}")
    for name, fps, xrt in rows:
        print(f"{name:56s} {fps:9.1f} {xrt:12.2f}")
    stages_cpu = ["capture", "infer", "maps to host", "resize", "view", "labels", "render", "encode"]
    print("\nper run: model-only reference = the best model row of the run's engine; CPU ms per frame of "
          "each stage's own thread")
    print(f"{'run':34s} {'vs model':>8s} {'lat. med/p95 ms':>16s} {'CPU ms/fr':>9s} {'RSS MB':>7s}  "
          + " ".join(f"{k[:8]:>8s}" for k in stages_cpu))
    for r in runs:
        c, lat = r["cpu_ms"] or {}, r["latency_ms"] or {}
        ratio = f"{100 * r['ratio_to_model_only']:.0f}%" if r.get("ratio_to_model_only") else "-"
        print(
            f"{r['engine'][0]} {r['config']} ({r['streams']}x{r['threads_per_stream']}) "
            f"b{r['batch']}".ljust(34) + " "
            f"{ratio:>8s} {lat.get('median', float('nan')):7.0f}/{lat.get('p95', float('nan')):<8.0f} "
            f"{r['cpu_ms_per_frame']:9.1f} {r['rss_mb'] or 0:7.0f}  "
            + " ".join(f"{c[k]:8.1f}" if k in c else f"{'-':>8s}" for k in stages_cpu)
        )
    if best:
        print(
            f"best: --streams {best['config']}, batch {best['batch']}: "
            f"{best['fps']:.1f} frames/s "
            f"= {best['x_real_time']:.2f}x real time "
            f"(target 1.5x: {'met' if results['meets_target'] else 'NOT met'})"
        )
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
