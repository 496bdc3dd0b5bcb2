"""Start-up of ``rtsal demo`` as a user runs it (targets: the README performance section).

Each run is a new process, ``python -m rtsal demo --no-window --max-frames N --stats-json F`` (the bundled
clip, played in real time, recorded to a temporary MP4), under three conditions:

- **eager**: ``--no-compile``;
- **cold cache**: ``--compile`` with an empty cache folder (the graph is built in a child process while the
  eager engine serves the first frames);
- **warm cache**: ``--compile`` again with the cache the cold run filled.

From the run's ``--stats-json`` (``startup_s``: seconds since the process started, read from ``/proc``): when
the model was loaded, when the first overlaid frame was drawn, when the first frame of the built backend
(compiled, OpenVINO, ONNX Runtime: ``--backends auto,openvino,onnxruntime``) was drawn, and how many frames
each engine drew. Targets: the first overlaid frame within 3 s of the model being loaded,
cold or warm; compiled frames within 5 s of launch on a warm cache.

    python benchmarks/startup.py                      # -> benchmarks/results/startup.json
    python benchmarks/startup.py --frames 60 --runs 3
    python benchmarks/startup.py --backends auto,openvino,onnxruntime
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

ROOT = Path(__file__).resolve().parents[1]


def demo_run(folder: Path, cache: Path, compile: bool, frames: int, model: str,
             backend: str = "auto") -> dict:
    """One ``rtsal demo`` process; its ``--stats-json`` plus the wall time of the whole process."""
    stats = folder / f"stats-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "rtsal", "demo", "--no-window", "--record", str(folder / "out.mp4"),
           "--max-frames", str(frames), "--stats-json", str(stats), "--cache-dir", str(cache),
           "--model", model, "--compile" if compile else "--no-compile", "--backend", backend]
    if model != "efficientnet-lite0":
        cmd += ["--weights", "none"]
    (folder / "out.mp4").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RTSAL_COMPILE", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=folder, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"rtsal demo failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    s = json.loads(stats.read_text())
    st = s["startup_s"]
    return {
        "wall_s": wall,
        "model_loaded_s": st["model_loaded_s"],
        "first_frame_s": st["first_frame_s"],
        "first_compiled_s": st["first_compiled_s"],
        "first_frame_after_model_s": st["first_frame_s"] - st["model_loaded_s"],
        "engines": s["engines"],
        "stderr": proc.stderr.strip().splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--frames", type=int, default=150, help="frames each run draws (the clip: 184, 15 fps)")
    p.add_argument("--runs", type=int, default=2, help="warm-cache and eager runs (median)")
    p.add_argument("--backends", default="auto",
                   help="comma-separated --backend values, each run cold and warm (auto, openvino, ...)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    a = p.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="rtsal-startup-"))
    eager = folder / "cache-eager"
    rows = {"eager": [demo_run(folder, eager, False, a.frames, a.model) for _ in range(a.runs)]}
    for backend in a.backends.split(","):
        cache = folder / f"cache-{backend}"
        label = "" if backend == "auto" else f"{backend}, "
        rows[f"{label}cold cache"] = [demo_run(folder, cache, True, a.frames, a.model, backend)]
        for _ in range(300):  # the build the cold run left running finishes its entry (no lock, no temporary)
            done = [p for p in cache.glob("*") if p.suffix in (".pt2", ".ovblob", ".onnx")
                    and not p.name.startswith(".")]
            if done and not any(cache.glob("*.lock")):
                break
            time.sleep(1)
        rows[f"{label}warm cache"] = [demo_run(folder, cache, True, a.frames, a.model, backend)
                                      for _ in range(a.runs)]

    def med(runs: list[dict], key: str) -> float | None:
        vals = [r[key] for r in runs if r[key] is not None]
        return statistics.median(vals) if vals else None

    print(f"\n`rtsal demo --no-window --max-frames {a.frames}`, {a.model}, {os.cpu_count()} cores; "
          "seconds since the process started (median of runs)\n")
    print("| run | model loaded | first frame | first frame after model | first backend frame | frames per "
          "engine | process wall |")
    print("|---|---|---|---|---|---|---|")

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for name, runs in rows.items():
        engines = runs[-1]["engines"]
        print(f"| {name} | {f(med(runs, 'model_loaded_s'))} | {f(med(runs, 'first_frame_s'))} | "
              f"{f(med(runs, 'first_frame_after_model_s'))} | {f(med(runs, 'first_compiled_s'))} | "
              f"{', '.join(f'{k} {v}' for k, v in engines.items())} | {f(med(runs, 'wall_s'))} |")
    out = {"meta": {"model": a.model, "frames": a.frames, "backends": a.backends, "cores": os.cpu_count(),
                    "cpu": platform.processor() or platform.machine(),
                    "date": time.strftime("%Y-%m-%d %H:%M")}, "runs": rows}
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
