"""The review page of ``rtsal video --report``: what it costs, how big it gets, how fast it opens.

1. **Overhead**: ``rtsal video`` on a 1280x720 25 fps clip with and without ``--report``, interleaved rounds
   (after one warm-up run that fills the compiled-graph cache): wall time and CPU time (user + system, all
   threads) of the whole command, medians of the per-round ratios. On a machine shared with other jobs
   the CPU ratio is the steadier of the two; on an idle machine the pipeline is CPU-bound and the wall
   ratio follows it.
2. **How frames travel**: the page's H.264 atlas video against per-frame JPEG images of the same atlas
   frames (quality 75), bytes per frame and encode milliseconds per frame.
3. **Size**: bytes per frame of the page of a long run, extrapolated to a 10-minute 720p video at 25 fps.
4. **Open and scrub**: the page of a 1-minute 720p clip opened from file:// in headless Chromium (Debian's,
   via Playwright): time until the first frame is drawn and the scrubber works, then the time to show each
   of 20 random frames.

Clips are pans and zooms over photos from skimage.data, the subject changing every 4 s, with light noise.
Prints a table and writes JSON. The machine is shared: read ratios from one run.

    python benchmarks/report.py [--rounds 3] [--seconds 8] [--minutes 1] [--json FILE.json]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
W, H, FPS = 1280, 720, 25


def make_clip(path: Path, seconds: float) -> int:
    """A 720p H.264 clip: a slow pan and zoom over one photo, the next photo every 4 s."""
    from rtsal.eval.motion import MovingCamera

    n = int(seconds * FPS)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": "20", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(n):
            photo = getattr(data, PHOTOS[(i // (4 * FPS)) % len(PHOTOS)])()
            cam = MovingCamera(photo.shape[:2], (H, W), (0.6, 0.2), 1.002, start_scale=1.7)
            img = cam.render(photo, i % (4 * FPS), cv2.INTER_LINEAR).astype(np.int16)
            img = np.clip(img + rng.normal(0, 3, img.shape).astype(np.int16), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return n


def run_video(clip: Path, out: Path, page: Path | None, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``rtsal video`` command."""
    import resource

    cmd = [sys.executable, "-m", "rtsal", "video", str(clip), "-o", str(out), "--no-progress"]
    if page is not None:
        cmd += ["--report", str(page)]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=3600)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def page_parts(page: Path) -> tuple[dict, bytes]:
    text = page.read_text()
    d = re.search(r'id="rtsal-data">(.*?)</script>', text, re.S).group(1)
    v = re.search(r'id="rtsal-video">(.*?)</script>', text, re.S).group(1)
    return json.loads(d), base64.b64decode(v)


def frames_travel(page: Path) -> dict:
    """H.264 atlas video against JPEG atlas images: bytes and encode ms per frame."""
    _, video = page_parts(page)
    with av.open(io.BytesIO(video)) as c:
        atlases = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    n = len(atlases)
    t0 = time.process_time()
    jpeg = sum(
        len(cv2.imencode(".jpg", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])[1])
        for a in atlases
    )
    jpeg_ms = (time.process_time() - t0) * 1e3 / n
    from rtsal.report.recorder import _AtlasEncoder

    tmp = Path(tempfile.mkdtemp())
    try:
        enc = _AtlasEncoder(tmp / "a.mp4", atlases[0].shape[:2])
        t0 = time.process_time()
        for i, a in enumerate(atlases):
            enc.write(a, i / FPS)
        enc.close()
        h264_ms = (time.process_time() - t0) * 1e3 / n
        h264 = (tmp / "a.mp4").stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "frames": n,
        "atlas": list(atlases[0].shape[:2]),
        "h264_bytes_per_frame": h264 / n,
        "jpeg75_bytes_per_frame": jpeg / n,
        "h264_encode_ms": h264_ms,
        "jpeg_encode_ms": jpeg_ms,
        "page_video_bytes_per_frame": len(video) / n,
    }


def open_in_browser(page: Path, probes: int = 20) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("RTSAL_CHROMIUM") or shutil.which("chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            ctx = b.new_context(viewport={"width": 1280, "height": 900}, offline=True)
            pg = ctx.new_page()
            errors = []
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            t0 = time.perf_counter()
            pg.goto(page.resolve().as_uri())
            pg.wait_for_selector('body[data-ready="1"]', timeout=60_000)
            opened = time.perf_counter() - t0
            n = pg.evaluate("window.rtsalReview.frames")
            rng = np.random.default_rng(0)
            seeks = []
            for k in rng.integers(0, n, probes).tolist():
                t0 = time.perf_counter()
                pg.evaluate(f"window.rtsalReview.go({k})")
                pg.wait_for_selector(f'body[data-frame="{k}"]', timeout=10_000)
                seeks.append((time.perf_counter() - t0) * 1e3)
            ctx.close()
        finally:
            b.close()
    return {
        "open_s": opened,
        "seek_ms_median": statistics.median(seeks),
        "seek_ms_max": max(seeks),
        "console_errors": errors,
    }


def repeated_page(page: Path, times: int, out: Path) -> Path:
    """A page ``times`` as long: its review video remuxed end to end (no re-encode) and its frames repeated
    with shifted times, to measure how a long page opens."""
    from rtsal.report.page import write_page

    data_, video = page_parts(page)
    buf = io.BytesIO()
    with av.open(io.BytesIO(video)) as src, av.open(buf, "w", format="mp4") as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        packets = [p for p in src.demux(s_in) if p.size]
        span = max(p.pts + (p.duration or 0) for p in packets)
        for k in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + k * span, p.dts + k * span
                q.duration, q.is_keyframe, q.time_base = p.duration, p.is_keyframe, p.time_base
                q.stream = s_out
                dst.mux(q)
    frames = data_["frames"]
    step = frames[-1]["t"] + (frames[-1]["t"] - frames[-2]["t"])
    data_["frames"] = [{**f, "t": round(f["t"] + k * step, 6)} for k in range(times) for f in frames]
    write_page(out, data_, buf.getvalue())
    return out


def overhead(work: Path, env: dict, seconds: float, rounds: int) -> dict:
    short = work / "short.mp4"
    n = make_clip(short, seconds)
    run_video(short, work / "warm.mp4", None, env)  # fills the compiled-graph cache
    plain, report = [], []
    for _ in range(rounds):
        plain.append(run_video(short, work / "a.mp4", None, env))
        report.append(run_video(short, work / "b.mp4", work / "b.html", env))
    data_, _ = page_parts(work / "b.html")
    wall = statistics.median(r[0] / p[0] for r, p in zip(report, plain, strict=True))
    cpu = statistics.median(r[1] / p[1] for r, p in zip(report, plain, strict=True))
    own = data_["run"]["report CPU ms per frame (flow, atlas, encode, page)"]
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    print(
        f"overhead, {n} frames 720p, {rounds} interleaved rounds: rtsal video {med(plain, 0):.1f} s wall, "
        f"{med(plain, 1):.1f} s CPU; with --report {med(report, 0):.1f} s, {med(report, 1):.1f} s; "
        f"ratio wall {wall:.3f} (+{100 * (wall - 1):.1f}%), CPU {cpu:.3f} (+{100 * (cpu - 1):.1f}%); "
        f"the report's own CPU time on the render thread, as the page says: {own} ms a frame"
    )
    return {
        "frames": n,
        "plain_wall_cpu_s": plain,
        "report_wall_cpu_s": report,
        "wall_ratio_median": wall,
        "cpu_ratio_median": cpu,
        "report_ms_per_frame_in_page": own,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the overhead clip (0: skip)")
    ap.add_argument("--minutes", type=float, default=1.0, help="length of the long clip (0: skip)")
    ap.add_argument("--json", default="benchmarks/results/report.json")
    ap.add_argument(
        "--repeat-page",
        default=None,
        metavar="PAGE.html",
        help="only: open PAGE repeated --times times end to end in Chromium (a long page's open time)",
    )
    ap.add_argument("--times", type=int, default=10)
    args = ap.parse_args()
    if args.repeat_page:
        work = Path(tempfile.mkdtemp(prefix="rtsal-bench-report-"))
        try:
            long = repeated_page(Path(args.repeat_page), args.times, work / "long.html")
            n = len(page_parts(long)[0]["frames"])
            b = open_in_browser(long)
            print(
                f"{args.repeat_page} x{args.times}: {n} frames, {long.stat().st_size / 1e6:.1f} MB; open and "
                f"scrubbable in {b['open_s']:.2f} s; a random frame in {b['seek_ms_median']:.0f} ms (median, "
                f"max {b['seek_ms_max']:.0f}); console errors {len(b['console_errors'])}"
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    work = Path(tempfile.mkdtemp(prefix="rtsal-bench-report-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RTSAL_CACHE_DIR": str(work / "cache")}
    result: dict = {"clip": f"{W}x{H} {FPS} fps H.264", "machine": "shared with other jobs (loaded)"}
    try:
        if args.seconds:
            result["overhead"] = overhead(work, env, args.seconds, args.rounds)
        if args.minutes:
            long = work / "long.mp4"
            n_long = make_clip(long, args.minutes * 60)
            page = work / "long.html"
            t_long = run_video(long, work / "long-out.mp4", page, env)[0]
            size = page.stat().st_size
            per_frame = size / n_long
            ten = per_frame * 10 * 60 * FPS
            travel = frames_travel(page)
            result["long"] = {
                "frames": n_long,
                "seconds": t_long,
                "page_bytes": size,
                "bytes_per_frame": per_frame,
                "ten_minutes_mb": ten / 1e6,
                "travel": travel,
            }
            print(
                f"page of a {args.minutes:g}-minute 720p clip ({n_long} frames): {size / 1e6:.1f} MB, "
                f"{per_frame / 1e3:.2f} kB a frame -> 10 minutes: {ten / 1e6:.0f} MB"
            )
            print(
                f"frames as H.264 atlas video: {travel['h264_bytes_per_frame'] / 1e3:.2f} kB a frame, "
                f"{travel['h264_encode_ms']:.1f} ms CPU to encode; as JPEG (q75): "
                f"{travel['jpeg75_bytes_per_frame'] / 1e3:.2f} kB a frame, {travel['jpeg_encode_ms']:.1f} ms "
                f"(x{travel['jpeg75_bytes_per_frame'] / travel['h264_bytes_per_frame']:.1f} the bytes)"
            )
            result["browser"] = b = open_in_browser(page)
            print(
                f"Chromium: open and scrubbable in {b['open_s']:.2f} s; a random frame shows in "
                f"{b['seek_ms_median']:.0f} ms (median of 20, max {b['seek_ms_max']:.0f} ms); "
                f"console errors: {len(b['console_errors'])}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
