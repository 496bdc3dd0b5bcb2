"""Soak test of ``rtsal serve``: the server's resident memory over a long run with a browser client attached
(target: flat, within 5% after warm-up).

A headless Chromium (Debian's, driven by Playwright) opens the page with a fake camera playing the bundled
demo clip at 640x480/30 fps in a loop; every ``--every`` seconds the server's RSS (``/proc/PID/status``) and
``GET /api/stats`` are sampled. The first minute is warm-up (allocator pools, the compiled graph); the
drift is the last sample over the median of the first samples after warm-up.

    python benchmarks/serve_soak.py                      # 10 minutes -> benchmarks/results/serve_soak.json
    python benchmarks/serve_soak.py --minutes 1 --every 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from browser_client import ROOT, browser, rss_mb, server, wait_displayed

sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    ap.add_argument("--serve-args", default="", help="extra rtsal serve options, e.g. '--no-compile'")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_soak.json"))
    args = ap.parse_args()

    from rtsal.io.y4m import video_to_y4m

    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.y4m"
        video_to_y4m(ROOT / "rtsal" / "data" / "demo.mp4", clip, 640, 480, 30)
        with server(*args.serve_args.split()) as (proc, url), browser(clip) as b:
            page = b.new_page()
            page.goto(url)
            wait_displayed(page, 1, 120)
            stats_url = url.replace("/?token=", "/api/stats?token=")
            t0 = time.time()
            while time.time() - t0 < args.minutes * 60:
                s = json.loads(urllib.request.urlopen(stats_url, timeout=10).read())
                samples.append(
                    {
                        "t_s": round(time.time() - t0, 1),
                        "rss_mb": round(rss_mb(proc.pid), 1),
                        "frames": s["frames"],
                        "fps": s["fps"],
                        "dropped": s["dropped"],
                    }
                )
                print(
                    f"{samples[-1]['t_s']:7.1f} s  rss {samples[-1]['rss_mb']:7.1f} MB  "
                    f"frames {s['frames']:6d}  fps {s['fps']:5.1f}",
                    flush=True,
                )
                time.sleep(args.every)
            page_stats = wait_displayed(page, 0, 1)
    after = [x for x in samples if x["t_s"] >= args.warmup] or samples
    base = statistics.median(x["rss_mb"] for x in after[:3])
    last = after[-1]["rss_mb"]
    peak = max(x["rss_mb"] for x in after)
    lat = sorted(page_stats["latencies"])
    result = {
        "minutes": args.minutes,
        "samples": samples,
        "rss_after_warmup_mb": base,
        "rss_last_mb": last,
        "rss_peak_mb": peak,
        "drift_pct": round(100 * (last - base) / base, 2),
        "frames": samples[-1]["frames"],
        "page_displayed": page_stats["displayed"],
        "page_latency_median_ms": lat[len(lat) // 2] if lat else None,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "note": "shared, loaded 2-core machine",
        },
    }
    print(
        f"\nRSS after warm-up {base:.1f} MB, last {last:.1f} MB, peak {peak:.1f} MB, "
        f"drift {result['drift_pct']:+.2f}% over {args.minutes:g} min; {result['frames']} frames explained"
    )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
