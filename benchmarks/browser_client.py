"""Shared by the ``rtsal serve`` benchmarks (not imported by the package): start the server, open its page in
Debian's headless Chromium with a fake camera playing a ``.y4m``, read the page's figures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RTSAL_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]
PAGE_STATS = (
    "({displayed: rtsal.stats.displayed, sent: rtsal.stats.sent, fps: rtsal.stats.fps, "
    "latencies: rtsal.stats.latencies, errors: rtsal.stats.errors, header: rtsal.stats.header})"
)


@contextlib.contextmanager
def server(*args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``rtsal serve --port 0 ARGS``: yields (process, page address); SIGINT and wait on exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, "-m", "rtsal", "serve", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = p.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"rtsal serve did not start (exit {p.wait(30)})")
        yield p, url
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def browser(y4m: Path) -> Iterator[object]:
    """A headless Chromium whose camera plays ``y4m``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=[*FLAGS, f"--use-file-for-fake-video-capture={y4m}"]
        )
        try:
            yield b
        finally:
            b.close()


def wait_displayed(page, n: int, timeout: float) -> dict:
    """Wait until the page has shown ``n`` results; its figures."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if page.evaluate("window.rtsal ? rtsal.stats.displayed : 0") >= n:
            break
        time.sleep(0.2)
    return page.evaluate(PAGE_STATS)


def wait_backend(page, timeout: float) -> str:
    """Wait until the server's results come from its built backend, not the eager frames served while it
    builds (``eager (building ...)``, ``eager (compiling)``); the engine's name."""
    deadline = time.time() + timeout
    engine = ""
    while time.time() < deadline:
        engine = page.evaluate("window.rtsal && rtsal.stats.header ? (rtsal.stats.header.engine || '') : ''")
        if engine and not engine.startswith("eager ("):
            break
        time.sleep(0.5)
    return engine


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` (those still alive)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def chromium_pids() -> list[int]:
    """The Chromium processes started from this process (browser, renderers, GPU and utility processes)."""
    parent: dict[int, int] = {}
    comm: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm[int(d.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, name in comm.items() if "chrom" in name.lower() and ours(pid)]
