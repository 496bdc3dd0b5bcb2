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


def bench_decode(path: Path, thread_type: str) -> float:
    """Frames/s of decode + RGB conversion."""
    t0 = time.perf_counter()
    with VideoReader(path, thread_type=thread_type) as r:
        n = sum(1 for _ in r)
    return n / (time.perf_counter() - t0)


def bench_encode(frames: list[np.ndarray], out: Path, preset: str, fps: int) -> tuple[float, int]:
    """Frames/s of RGB -> YUV + libx264 at ``preset`` (crf 23), and the file size in bytes."""
    t0 = time.perf_counter()
    with VideoWriter(out, preset=preset, rate=fps, time_base=Fraction(1, fps)) as w:
        for i, img in enumerate(frames):
            w.write(img, i / fps, 1 / fps)
    return len(frames) / (time.perf_counter() - t0), out.stat().st_size


def bench_model(explainer, frames: list[np.ndarray], batch: int) -> float:
    """Frames/s of preprocess + forward + FastCAM maps at model resolution (as ``rtsal video`` runs it)."""
    stack = np.stack(frames[: max(batch, (len(frames) // batch) * batch)])
    explainer.explain(stack[:batch], size="model")  # warm-up at this batch size
    t0 = time.perf_counter()
    n = 0
    for s in range(0, len(stack) - batch + 1, batch):
        explainer.explain(stack[s : s + batch], size="model")
        n += batch
    return n / (time.perf_counter() - t0)


def run_job(clip: Path, out: Path, batch: int, preset: str, extra: list[str] | None = None) -> dict:
    """One whole ``rtsal video`` job (model loaded and warmed up first, not timed); its rates."""
    args = build_parser().parse_args(
        ["video", str(clip), "-o", str(out), "--batch", str(batch), "--preset", preset, "--no-progress"]
        + (extra or [])
    )
    with VideoJob(clip, out, settings_of(args)) as job, FrameExplainer(make_runner(args), args.method) as fe:
        info = job.info
        fe.explain(np.zeros((batch, info.height, info.width, 3), np.uint8))  # warm-up, not timed
        t0, c0 = time.perf_counter(), time.process_time()
        job.run(fe)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    duration = info.duration or job.written / info.fps
    cpu_ms = cpu / max(1, job.written) * 1e3
    return {
        "batch": batch,
        "preset": preset,
        "frames": job.written,
        "elapsed_s": round(elapsed, 3),
        "fps": round(job.written / elapsed, 2),
        "x_real_time": round(duration / elapsed, 3),
        # CPU time of this process per frame (all threads): robust to other load on the machine; the
        # machine's cores can do at most cores * 1000 / cpu_ms frames/s of it
        "cpu_ms_per_frame": round(cpu_ms, 2),
        "cpu_bound_fps": round((os.cpu_count() or 1) * 1e3 / cpu_ms, 1),
    }


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
    p.add_argument("--size", default="1280x720", help="WxH of the clip (default 1280x720)")
    p.add_argument("--batches", default="1,2,4,8", help="batch sizes for the model and the pipeline")
    p.add_argument("--presets", default="ultrafast,superfast,veryfast,faster,medium", help="libx264 presets")
    p.add_argument(
        "--pipeline-preset", default="veryfast", help="preset of the pipeline runs (default veryfast)"
    )
    p.add_argument(
        "--threads",
        default=None,
        help="torch intra-op thread counts to try in the pipeline, e.g. 1,2 (default: torch's, then 1)",
    )
    p.add_argument("--stages", default="decode,encode,model,pipeline", help="what to time (default: all)")
    p.add_argument("--decoders", default="AUTO,FRAME,SLICE,NONE", help="decoder thread types to time")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "video.json"))
    p.add_argument("--example", default=None, metavar="PNG", help="also save an output frame here")
    p.add_argument("--quick", action="store_true", help="tiny clip and few settings: checks the script")
    a = p.parse_args()
    default_threads = torch.get_num_threads()
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
        decode = {}
        for tt in a.decoders.split(",") if "decode" in stages else ():
            decode[tt] = round(statistics.median(bench_decode(clip, tt) for _ in range(2)), 2)
            rows.append((f"decode -> RGB, thread_type={tt}", decode[tt], decode[tt] / a.fps))
        results["decode_fps"] = decode

        with VideoReader(clip) as r:
            frames = [f.image for f in r]
        sample = frames[: min(len(frames), 100)]
        encode = {}
        for preset in presets if "encode" in stages else ():
            fps, size = bench_encode(sample, tmp / f"enc-{preset}.mp4", preset, a.fps)
            encode[preset] = {
                "fps": round(fps, 2),
                "kbit_s": round(size * 8 / (len(sample) / a.fps) / 1000, 1),
            }
            rows.append((f"encode libx264 {preset} (crf 23)", fps, fps / a.fps))
        results["encode"] = encode

        from rtsal.engine.explainer import Explainer

        model = {}
        with Explainer("efficientnet-lite0") as e:
            for th in threads if "model" in stages else ():
                torch.set_num_threads(th)
                for b in batches:
                    fps = round(bench_model(e, frames[: min(len(frames), 64)], b), 2)
                    model[f"threads={th},batch={b}"] = fps
                    rows.append((f"model lite0 fastcam, batch {b}, {th} thread(s)", fps, fps / a.fps))
        results["model_fps"] = model
        del frames, sample

        runs = []
        for th in threads if "pipeline" in stages else ():
            torch.set_num_threads(th)
            for b in batches:
                r = run_job(clip, tmp / f"out-{b}.mp4", b, a.pipeline_preset)
                r["torch_threads"] = th
                runs.append(r)
                label = f"rtsal video, batch {b}, {th} thread(s)"
                rows.append((label, r["fps"], r["x_real_time"]))
        torch.set_num_threads(default_threads)
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
    print(f"{'stage':44s} {'frames/s':>9s} {'x real time':>12s}")
    for name, fps, xrt in rows:
        print(f"{name:44s} {fps:9.1f} {xrt:12.2f}")
    for r in runs:
        print(
            f"  batch {r['batch']}, {r['torch_threads']} thread(s): {r['cpu_ms_per_frame']:.1f} CPU ms/frame "
            f"-> at most {r['cpu_bound_fps']:.1f} frames/s on {os.cpu_count()} cores"
        )
    if best:
        print(
            f"best: batch {best['batch']}, {best['torch_threads']} torch thread(s): "
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
