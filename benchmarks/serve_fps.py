"""``rtsal serve`` in a browser against ``rtsal webcam`` on the same clip (targets: the browser client gets
>= 90% of webcam's frames per second at 640x480, median capture-to-display latency <= 100 ms).

One server and one headless Chromium (Debian's, driven by Playwright; its fake camera plays the bundled demo
clip at 640x480/30 fps) stay up; rounds alternate: the page is paused while ``rtsal webcam --source CLIP
--no-window`` runs on the same ``.y4m`` (same engine options), then the page runs for the same time. The
ratio is taken per round and its median reported, so that the load of a shared machine hits both alike.

    python benchmarks/serve_fps.py                       # -> benchmarks/results/serve_fps.json
    python benchmarks/serve_fps.py --rounds 5 --seconds 15 --engine-args "--no-compile"
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
from pathlib import Path

from browser_client import ROOT, browser, chromium_pids, cpu_s, server, wait_backend, wait_displayed

sys.path.insert(0, str(ROOT))


def webcam_round(clip: Path, frames: int, engine_args: list[str], folder: Path) -> dict:
    stats = folder / f"webcam-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        "-m",
        "rtsal",
        "webcam",
        "--source",
        str(clip),
        "--no-window",
        "--max-frames",
        str(frames),
        "--stats-json",
        str(stats),
        *engine_args,
    ]
    subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        timeout=600,
    )
    s = json.loads(stats.read_text())
    lat = s.get("display_latency_ms") or s["latency_ms"]
    return {
        "fps": s["fps"],
        "latency_median_ms": lat["median"],
        "engines": s.get("engines"),
        "cpu_ms_per_frame": s.get("cpu_ms_process_per_frame"),
    }


def browser_round(page, seconds: float, server_pid: int) -> dict:
    page.click("#pause")  # resume
    wait_displayed(page, page.evaluate("rtsal.stats.displayed") + 3, 120)  # past the pause
    n0, t0, k0 = page.evaluate("[rtsal.stats.displayed, performance.now(), rtsal.stats.latencies.length]")
    browser_pids = chromium_pids()
    c_browser, c_server = cpu_s(browser_pids), cpu_s([server_pid])
    time.sleep(seconds)
    c_browser, c_server = cpu_s(browser_pids) - c_browser, cpu_s([server_pid]) - c_server
    n1, t1, lat = page.evaluate(
        f"[rtsal.stats.displayed, performance.now(), rtsal.stats.latencies.slice({k0})]"
    )
    header = page.evaluate("rtsal.stats.header")
    page.click("#pause")  # pause
    return {
        "fps": (n1 - n0) / ((t1 - t0) / 1000),
        "latency_median_ms": statistics.median(lat),
        "engine": header.get("engine"),
        "forward_ms": header.get("forward_ms"),
        "saliency_ms": header.get("saliency_ms"),
        "saliency_overhead_pct": header.get("saliency_overhead_pct"),
        "cpu_ms_per_frame": {
            "chromium": 1e3 * c_browser / max(1, n1 - n0),
            "server": 1e3 * c_server / max(1, n1 - n0),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15.0, help="browser time per round")
    ap.add_argument("--webcam-frames", type=int, default=150)
    ap.add_argument("--engine-args", default="", help="engine options for both, e.g. '--no-compile'")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_fps.json"))
    args = ap.parse_args()
    engine_args = args.engine_args.split()

    from rtsal.io.y4m import video_to_y4m

    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = folder / "clip.y4m"
        video_to_y4m(ROOT / "rtsal" / "data" / "demo.mp4", clip, 640, 480, 30)
        webcam_round(clip, 30, engine_args, folder)  # warm-up: the compiled graph's cache, file caches
        with server(*engine_args) as (proc, url), browser(clip) as b:
            page = b.new_page()
            page.goto(url)
            wait_displayed(page, 20, 300)
            print(f"server backend: {wait_backend(page, 600)}", flush=True)  # rounds time the built backend
            page.click("#pause")
            for k in range(args.rounds):
                w = webcam_round(clip, args.webcam_frames, engine_args, folder)
                s = browser_round(page, args.seconds, proc.pid)
                rounds.append({"webcam": w, "browser": s, "ratio": s["fps"] / w["fps"]})
                print(
                    f"round {k + 1}: webcam {w['fps']:5.1f} fps, latency {w['latency_median_ms']:6.1f} ms | "
                    f"browser {s['fps']:5.1f} fps, latency {s['latency_median_ms']:6.1f} ms "
                    f"({s['engine']}) | ratio {rounds[-1]['ratio']:.2f}",
                    flush=True,
                )
            # the page paused, its camera still playing: what Chromium costs without any rtsal frame
            pids = chromium_pids()
            c0, t0 = cpu_s(pids), time.perf_counter()
            time.sleep(10)
            idle_cpu_ms_per_s = 1e3 * (cpu_s(pids) - c0) / (time.perf_counter() - t0)
    ratios = [r["ratio"] for r in rounds]
    result = {
        "rounds": rounds,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "browser_fps_median": statistics.median(r["browser"]["fps"] for r in rounds),
        "webcam_fps_median": statistics.median(r["webcam"]["fps"] for r in rounds),
        "browser_latency_median_ms": statistics.median(r["browser"]["latency_median_ms"] for r in rounds),
        "webcam_latency_median_ms": statistics.median(r["webcam"]["latency_median_ms"] for r in rounds),
        "cpu_ms_per_frame_median": {
            "webcam": statistics.median(r["webcam"]["cpu_ms_per_frame"] or 0 for r in rounds),
            "server": statistics.median(r["browser"]["cpu_ms_per_frame"]["server"] for r in rounds),
            "chromium": statistics.median(r["browser"]["cpu_ms_per_frame"]["chromium"] for r in rounds),
        },
        "chromium_paused_cpu_ms_per_s": idle_cpu_ms_per_s,
        "engine_args": engine_args,
        "size": "640x480, 30 fps fake camera",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "note": "shared 2-core machine, loaded by other work",
        },
    }
    print(
        f"\n| | fps (median) | latency median (ms) |\n|---|---|---|\n"
        f"| rtsal webcam --source | {result['webcam_fps_median']:.1f} | "
        f"{result['webcam_latency_median_ms']:.0f} |\n"
        f"| rtsal serve, Chromium | {result['browser_fps_median']:.1f} | "
        f"{result['browser_latency_median_ms']:.0f} |\n\n"
        f"browser / webcam: median {result['ratio_median']:.2f} "
        f"(min {result['ratio_min']:.2f}, max {result['ratio_max']:.2f}) over {len(rounds)} rounds\n"
        f"CPU ms per frame (medians): webcam process {result['cpu_ms_per_frame_median']['webcam']:.0f}, "
        f"server {result['cpu_ms_per_frame_median']['server']:.0f}, "
        f"Chromium {result['cpu_ms_per_frame_median']['chromium']:.0f}; Chromium with the page paused "
        f"(camera on): {idle_cpu_ms_per_s:.0f} ms of CPU per second"
    )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
