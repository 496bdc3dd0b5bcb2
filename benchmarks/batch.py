"""``rtsal batch`` against a shell loop of ``rtsal video`` over the same files, in one run.

Eight clips are made here (a pan over the bundled photographs, H.264 + AAC). Three ways to explain them all,
each timed from the command's start to its end (model loading, worker start-up and the manifest included):

- ``loop``: ``for f in clips; do rtsal video $f -o ...; done`` (one process per file, the model loaded for
  each one);
- ``batch-1``: ``rtsal batch`` with one local Dask worker (the engine built once);
- ``batch-2``: ``rtsal batch`` with two local Dask workers.

Usage::

    python benchmarks/batch.py              # 8 clips of 160x120, 40 frames, Lite0 at --size 128
    python benchmarks/batch.py --quick      # 8 clips of 10 frames, to check the script

Writes ``benchmarks/results/batch.json`` and prints a table. On a shared machine, read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("coffee", "chelsea", "rocket", "astronaut")


def make_clip(path: Path, k: int, frames: int, width: int, height: int) -> None:
    """A pan over a bundled photograph, 10 fps H.264, with a 440 Hz AAC track."""
    img = cv2.cvtColor(cv2.imread(str(ROOT / "rtsal" / "data" / f"{PHOTOS[k % 4]}.jpg")), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=16000, layout="mono")
        for i in range(frames):
            x = int((w - w // 2) * i / max(1, frames - 1))
            crop = img[: h // 2 * 2, x : x + w // 2]
            f = av.VideoFrame.from_ndarray(cv2.resize(crop, (width, height)), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        n = int(frames / 10 * 16000)
        pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
        for s in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(pcm[None, s : s + 1024], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = 16000, s, Fraction(1, 16000)
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def timed(cmd: list[str] | str, shell: bool = False) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, shell=shell, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {cmd}\n{r.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--size", type=int, default=128, help="model input short side (default 128)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch.json"))
    a = ap.parse_args()
    frames = 10 if a.quick else a.frames
    engine = ["--size", str(a.size), "--preset", "ultrafast"]
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="rtsal-bench-batch-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        clips = [src / f"clip{k}.mp4" for k in range(a.clips)]
        for k, path in enumerate(clips):
            make_clip(path, k, frames, 160, 120)
        total = a.clips * frames
        loop_out = Path(tmp) / "loop"
        loop_out.mkdir()
        loop = "; ".join(
            shlex.join([py, "-m", "rtsal", "video", str(c), "-o", str(loop_out / c.name), *engine])
            for c in clips
        )
        runs = [
            ("loop", "shell loop of rtsal video", loop, True),
            ("batch-1", "rtsal batch --workers 1", None, False),
            ("batch-2", "rtsal batch --workers 2", None, False),
        ]
        for name, label, cmd, shell in runs:
            if cmd is None:
                workers = name.split("-")[1]
                cmd = [
                    py,
                    "-m",
                    "rtsal",
                    "batch",
                    str(src),
                    "-o",
                    str(Path(tmp) / name),
                    "--workers",
                    workers,
                    "--quiet",
                    *engine,
                ]
            wall = timed(cmd, shell=shell)
            rows.append(
                {
                    "run": name,
                    "command": label,
                    "wall_s": round(wall, 2),
                    "files_per_s": round(a.clips / wall, 3),
                    "frames_per_s": round(total / wall, 2),
                }
            )
            print(
                f"{label:28s} {wall:7.1f} s  {a.clips / wall:6.3f} files/s  {total / wall:6.1f} frames/s",
                flush=True,
            )
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_loop"] = round(base / r["wall_s"], 2)
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
        },
        "clips": {"count": a.clips, "frames_each": frames, "size": "160x120", "codec": "h264 + aac"},
        "model": "efficientnet-lite0 (pretrained), --size " + str(a.size),
        "note": "wall time from command start to end, model loading and worker start-up included; "
        "measured on a shared, loaded 2-core machine",
        "runs": rows,
    }
    print()
    print(f"{'run':28s} {'wall s':>7s} {'files/s':>8s} {'frames/s':>9s} {'vs loop':>8s}")
    for r in rows:
        print(
            f"{r['command']:28s} {r['wall_s']:7.1f} {r['files_per_s']:8.3f} {r['frames_per_s']:9.1f} "
            f"{r['speedup_vs_loop']:7.2f}x"
        )
    if not a.quick:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
