"""The live pipeline against the model's own speed (targets: the README performance section), in one run.

1. **forward only**: a plain ``inference_mode`` forward of the same model (a copy without hooks,
   channels-last) on a 640x480 frame preprocessed exactly as the pipeline does, timed before and after the
   pipeline runs.
2. **end to end**: ``rtsal webcam --source CLIP --no-realtime --no-window``'s session (capture thread decoding
   a 640x480 H.264 clip, infer thread running ``--method``, render thread drawing the overlay, top-3 labels
   and HUD into a null sink), as fast as possible: frames/s, per-stage medians, and the ratio to (1).
   Target: >= 90 % of the forward-only rate. Also given against the forward pass timed inside the infer
   stage during the same run (insensitive to a machine whose speed drifts between runs).
3. **real time**: the same clip paced at its frame rate (``--realtime``, a latest-frame slot as for a
   camera), per rate in ``--rt-fps``: capture->render latency in ms and in frame periods, and drops.
   Target: latency <= 2 frame periods when the model keeps up.
4. **soak** (``--soak N``): N frames through the end-to-end session (the decoded clip looped in memory),
   resident memory sampled every ``--soak-every`` frames; growth from the first sample after warm-up to the
   last. Target: flat within 5 % over 10,000 frames.

    python benchmarks/pipeline.py                                 # -> benchmarks/results/pipeline.json
    python benchmarks/pipeline.py --soak 10000                    # + the 10,000-frame soak
    python benchmarks/pipeline.py --frames 20 --rt-seconds 2 --soak 60 --soak-every 20   # check the script
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
    return build_parser().parse_args(["webcam", "--no-window", *extra])


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


def session_run(args: argparse.Namespace, runner, source, live: bool) -> dict:
    """One LiveSession run into a null sink; the summary ``rtsal webcam --stats-json`` would write."""
    explainer = FrameExplainer(runner, args.method)
    session = LiveSession(explainer, live_settings(args), NullSink(), None, live=live)
    session.close = lambda: None  # type: ignore[method-assign]  # keep the runner for the next run
    before = torch.get_num_threads()
    apply_threads(args)  # as `rtsal webcam` does: --threads, else one fewer than the cores
    try:
        stats = session.run(source)
    finally:
        torch.set_num_threads(before)
    return session.summary(stats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--method", default="fastcam")
    p.add_argument("--size", type=int, default=224, help="model input short side")
    p.add_argument("--frames", type=int, default=300, help="frames in the end-to-end run")
    p.add_argument("--clip-fps", type=float, default=30.0)
    p.add_argument("--rt-fps", default="10,15,30", help="real-time rates to play the clip at")
    p.add_argument("--rt-seconds", type=float, default=10.0, help="length of each real-time run")
    p.add_argument("--forward-iters", type=int, default=50)
    p.add_argument("--soak", type=int, default=0, metavar="N", help="frames in the memory soak (0: none)")
    p.add_argument("--soak-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=2, help="torch threads for the forward-only reference")
    p.add_argument("--pipeline-threads", type=int, default=None,
                   help="torch threads inside the pipeline (default: as rtsal webcam, cores - 1)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "pipeline.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    engine = ["--model", a.model, "--method", a.method, "--size", str(a.size)]
    if a.pipeline_threads:
        engine += ["--threads", str(a.pipeline_threads)]
    if a.model != "efficientnet-lite0":
        engine += ["--weights", "none"]  # only lite0 has weights offline; speed does not depend on them

    tmp = Path(tempfile.mkdtemp(prefix="rtsal-bench-"))
    clip = make_clip(tmp / "clip.mp4", a.frames, a.clip_fps)
    images = [f.image for f in StreamSource(str(clip), realtime=False)]
    args = webcam_args(["--source", str(clip), "--no-realtime", *engine])
    runner = make_runner(args)
    result: dict = {"meta": {
        "torch": torch.__version__, "threads": a.threads, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "model": a.model,
        "method": a.method, "size": a.size, "frame": list(SIZE), "frames": a.frames,
    }}
    try:
        runner.explain(images[0])  # warm-up
        decode_t = time.perf_counter()
        n_decoded = sum(1 for _ in StreamSource(str(clip), realtime=False))
        decode_fps = n_decoded / (time.perf_counter() - decode_t)
        fwd_before = forward_only(args, runner, images[0], a.forward_iters)
        e2e = session_run(args, runner, StreamSource(str(clip), realtime=False), live=False)
        fwd_after = forward_only(args, runner, images[0], a.forward_iters)
        fwd_fps = statistics.mean([fwd_before["fps"], fwd_after["fps"]])
        result["decode_fps"] = decode_fps
        result["forward_only"] = {"before": fwd_before, "after": fwd_after, "fps": fwd_fps}
        result["end_to_end"] = {
            **e2e,
            "ratio_to_forward": e2e["fps"] / fwd_fps,
            # the same ratio against the forward pass timed inside the infer stage during this very run:
            # robust to a machine whose speed drifts between the separate runs
            "ratio_to_forward_in_run": e2e["fps"] * e2e["forward_ms"] / 1000.0,
        }

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

    print_table(result)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


def print_table(r: dict) -> None:
    m, f, e = r["meta"], r["forward_only"], r["end_to_end"]
    print(f"\n{m['model']} / {m['method']}, frames {m['frame'][0]}x{m['frame'][1]} -> model input "
          f"{'x'.join(map(str, f['before']['input'][2:]))}, {m['threads']} threads, {m['cores']} cores\n")
    print("| run | frames/s | vs forward only | capture ms | infer ms | render ms | latency median / p95 ms "
          "| dropped |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| forward only (before / after) | {f['before']['fps']:.1f} / {f['after']['fps']:.1f} | 100% "
          f"| | {f['before']['median_ms']:.1f} | | | |")
    print(f"| decode only | {r['decode_fps']:.1f} | | | | | | |")

    def row(name: str, s: dict, ratio: str) -> str:
        st, lat = s["stage_ms"], s["latency_ms"]
        return (f"| {name} | {s['fps']:.1f} | {ratio} | {st['capture']:.1f} | {st['infer']:.1f} "
                f"| {st['render']:.1f} | {lat['median']:.0f} / {lat['p95']:.0f} | {s['dropped']} of "
                f"{s['captured']} |")

    print(row("end to end, as fast as possible", e, f"{100 * e['ratio_to_forward']:.0f}%"))
    for s in r.get("realtime", []):
        lp = s["latency_periods"]
        print(row(f"real time {s['source_fps']:g} fps source", s,
                  f"latency {lp['median']:.2f} / {lp['p95']:.2f} periods"))
    print(f"\nend to end: forward {e['forward_ms']:.1f} ms + saliency {e['saliency_ms']:.1f} ms "
          f"(+{e['saliency_overhead_pct']:.1f}% of the forward) per frame inside the infer stage; "
          f"{e['fps']:.1f} frames/s = {100 * e['ratio_to_forward_in_run']:.0f}% of that forward's own rate "
          f"({1000 / e['forward_ms']:.1f}/s)")
    if "soak" in r:
        s = r["soak"]
        print(f"\nsoak: {s['frames']} frames at {s['fps']:.1f} fps; "
              f"resident memory {s['rss_warm_mb']:.0f} MB after warm-up -> {s['rss_last_mb']:.0f} MB "
              f"at the end ({s['growth_pct']:+.2f}%), "
              f"peak {s['rss_peak_mb']:.0f} MB ({s['peak_over_warm_pct']:+.2f}%)")


if __name__ == "__main__":
    sys.exit(main())
