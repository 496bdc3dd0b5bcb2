"""The review page in a real browser: Debian's Chromium, headless, driven by Playwright (``executable_path``;
Playwright's own browser downloads are not used). The page loads from a file:// URL offline with no console
error and no request but its own file and its blob; scrubbing (keys, the range input) shows that frame's
overlay; a click on the timeline and on an event jumps to that frame."""

from __future__ import annotations

import os
import shutil
import time

import cv2
import numpy as np
import pytest
from helpers import make_clip, pan_frames

from rtsal.cli import main
from rtsal.io.video import VideoReader

sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
CHROMIUM = os.environ.get("RTSAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (.ci/run installs Debian's chromium)"
)
SIG = (48, 27)  # signature size of a picture: (w, h)
N = 24


def signature(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, SIG, interpolation=cv2.INTER_AREA).astype(np.float32)


@pytest.fixture(scope="module")
def review(tmp_path_factory) -> dict:
    """A 320x180 clip, 12 frames panning over a cup then 12 over a cat (top-1 changes), explained by the
    pretrained Lite0 with a page."""
    d = tmp_path_factory.mktemp("review")
    frames = pan_frames(12, 320, 180, "coffee", crop=(300, 169, 100)) + pan_frames(
        12, 320, 180, "chelsea", crop=(220, 124, 60)
    )
    clip = d / "clip.mp4"
    make_clip(clip, 320, 180, [round(i * 1000 / 12) for i in range(N)], 83, codec="libx264", frames=frames)
    out, page = d / "out.mp4", d / "page.html"
    assert main(["video", str(clip), "-o", str(out), "--report", str(page), "--no-labels", "--no-progress",
                 "--crf", "14"]) == 0
    with VideoReader(out) as r:
        written = [signature(f.image) for f in r]
    assert len(written) == N
    return {"page": page, "signatures": np.stack(written)}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, review):
    """The page opened offline; console errors, page errors and requests recorded."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    pg = ctx.new_page()
    pg.errors, pg.requests = [], []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    t0 = time.perf_counter()
    pg.goto(review["page"].resolve().as_uri())
    pg.wait_for_selector('body[data-ready="1"]', timeout=20_000)
    pg.open_s = time.perf_counter() - t0
    try:
        yield pg
    finally:
        ctx.close()


def shown(pg, frame: int) -> np.ndarray:
    """Wait until the page says ``frame`` is drawn; the overlay canvas's signature."""
    pg.wait_for_selector(f'body[data-frame="{frame}"]', timeout=10_000)
    rgba = pg.evaluate(
        """([w, h]) => { const s = document.createElement('canvas'); s.width = w; s.height = h;
        const x = s.getContext('2d'); x.imageSmoothingQuality = 'high';
        x.drawImage(document.getElementById('overlay'), 0, 0, w, h);
        return Array.from(x.getImageData(0, 0, w, h).data); }""",
        list(SIG),
    )
    return np.array(rgba, np.float32).reshape(SIG[1], SIG[0], 4)[..., :3]


def nearest(review, sig: np.ndarray) -> int:
    return int(np.argmin(np.abs(review["signatures"] - sig).mean(axis=(1, 2, 3))))


def test_loads_offline_without_errors_or_requests(page):
    page.wait_for_timeout(300)
    assert page.errors == []
    schemes = {u.split(":", 1)[0] for u in page.requests}
    assert schemes <= {"file", "blob", "data"}, page.requests
    assert sum(u.startswith("file:") for u in page.requests) == 1
    assert page.locator("#scrub").get_attribute("max") == str(N - 1)
    print(f"page open and scrubbable in {page.open_s:.2f} s")


def test_scrubbing_shows_that_frames_overlay(page, review):
    for k in (0, 5, 13, N - 1):
        page.evaluate("k => { const s = document.getElementById('scrub'); s.value = k; "
                      "s.dispatchEvent(new Event('input', {bubbles: true})); }", k)
        assert nearest(review, shown(page, k)) == k
        assert f"frame {k + 1}/{N}" in page.locator("#timecode").inner_text()
    assert page.errors == []


def test_keyboard_steps_frames(page, review):
    scrub = page.locator("#scrub")
    scrub.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert nearest(review, shown(page, 3)) == 3 and scrub.input_value() == "3"
    page.keyboard.press("Shift+ArrowRight")  # one second: 12 frames
    assert nearest(review, shown(page, 15)) == 15
    page.keyboard.press("End")
    shown(page, N - 1)
    page.keyboard.press("Home")
    shown(page, 0)
    page.keyboard.press(".")
    shown(page, 1)


def test_timeline_click_jumps_to_that_frame(page, review):
    box = page.locator("#timeline").bounding_box()
    for k in (7, 19):
        x = box["x"] + k / (N - 1) * (box["width"] - 1)
        page.mouse.click(x, box["y"] + 150)  # on the stability curve
        assert nearest(review, shown(page, k)) == k
        assert page.locator("#scrub").input_value() == str(k)


def test_events_jump_and_maps_follow(page, review):
    events = page.locator("#events button")
    assert events.count() >= 1  # the cup turns into a cat: at least one top-1 change
    first = events.first
    k = int(first.get_attribute("data-frame"))
    first.click()
    assert nearest(review, shown(page, k)) == k
    tiles = page.locator("#maps canvas")
    assert tiles.count() == 6  # the drawn map and five scales of Lite0
    pixels = page.evaluate("""() => Array.from(document.querySelectorAll('#maps canvas')).map(c =>
        { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let s = 0, s2 = 0, n = 0;
          for (let i = 0; i < d.length; i += 4) { s += d[i]; s2 += d[i] * d[i]; n++; }
          return Math.sqrt(s2 / n - (s / n) ** 2); })""")
    assert min(pixels) > 5  # coloured maps, not blank tiles


def test_screenshot(page, tmp_path):
    path = tmp_path / "page.png"
    page.screenshot(path=str(path), full_page=True)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 1200 and img.std() > 20
