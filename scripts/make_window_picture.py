"""The README's window picture: ``rtsal demo`` in its window (under Xvfb when there is no display), with the
compiled engine on a warm cache; the picture is the window's own snapshot (the ``s`` key) taken once the
HUD has shown compiled frames for a while, then ``q`` ends the run.

    python scripts/make_window_picture.py                       # -> docs/webcam-window.png
    python scripts/make_window_picture.py --wait 10 -o /tmp/window.png

Needs xdotool (and xvfb-run without a display). The first run builds the graph into the cache (``rtsal
demo`` once beforehand, or ``--wait`` long enough).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "webcam-window.png"))
    p.add_argument("--wait", type=float, default=9.0, help="seconds after the window opens (default 9)")
    p.add_argument("--cache-dir", default=None)
    a = p.parse_args()
    if not os.environ.get("DISPLAY"):
        if not shutil.which("xvfb-run"):
            raise SystemExit("no display and no xvfb-run")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1024x768x24", sys.executable, *sys.argv]
        return subprocess.call(cmd)
    snaps = Path(tempfile.mkdtemp(prefix="rtsal-window-"))
    cmd = [sys.executable, "-m", "rtsal", "demo", "--compile", "--snapshot-dir", str(snaps)]
    if a.cache_dir:
        cmd += ["--cache-dir", a.cache_dir]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    wid, deadline = None, time.time() + 120
    while wid is None and time.time() < deadline and proc.poll() is None:
        r = subprocess.run(["xdotool", "search", "--name", "^rtsal$"], capture_output=True, text=True)
        wid = r.stdout.split()[0] if r.stdout.split() else None
        time.sleep(0.2)
    if wid is None:
        proc.kill()
        raise SystemExit(f"no rtsal window: {proc.communicate()[1][-300:]}")
    time.sleep(a.wait)
    subprocess.run(["xdotool", "key", "--window", wid, "s"], check=True)
    time.sleep(1.0)
    subprocess.run(["xdotool", "key", "--window", wid, "q"], check=True)
    _, err = proc.communicate(timeout=60)
    shots = sorted(snaps.glob("rtsal-snapshot-*.png"))
    if not shots:
        raise SystemExit(f"no snapshot was saved: {err[-300:]}")
    shutil.move(str(shots[-1]), a.output)
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
