"""The docs' picture of the review page: ``rtsal video`` on the bundled demo clip with ``--report``, the page
opened from file:// in headless Chromium (Debian's, driven by Playwright), scrubbed to an event, and a
screenshot of its upper part.

    python scripts/make_review_picture.py                 # -> docs/review-page.jpg
    python scripts/make_review_picture.py -o /tmp/page.jpg --keep /tmp/demo.html
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "review-page.jpg"))
    p.add_argument("--keep", default=None, metavar="PAGE.html", help="also keep the page here")
    p.add_argument("--height", type=int, default=1020, help="pixels of the page shown (default 1020)")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="rtsal-review-picture-"))
    try:
        page = work / "demo.html"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rtsal",
                "video",
                str(ROOT / "rtsal" / "data" / "demo.mp4"),
                "-o",
                str(work / "demo.mp4"),
                "--report",
                str(page),
                "--no-progress",
            ],
            check=True,
            env=env,
            timeout=1800,
        )
        chromium = os.environ.get("RTSAL_CHROMIUM") or shutil.which("chromium")
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                pg = b.new_page(viewport={"width": 1280, "height": args.height}, device_scale_factor=1)
                pg.goto(page.resolve().as_uri())
                pg.wait_for_selector('body[data-ready="1"]', timeout=30_000)
                events = pg.locator("#events button")
                k = (
                    int(events.nth(min(1, events.count() - 1)).get_attribute("data-frame"))
                    if events.count()
                    else 60
                )
                pg.evaluate(f"window.rtsalReview.go({k})")
                pg.wait_for_selector(f'body[data-frame="{k}"]', timeout=10_000)
                png = work / "shot.png"
                pg.screenshot(path=str(png))
            finally:
                b.close()
        img = cv2.imread(str(png))
        cv2.imwrite(args.output, img, [cv2.IMWRITE_JPEG_QUALITY, 82])
        print(f"wrote {args.output} ({Path(args.output).stat().st_size // 1024} KB), frame {k}")
        if args.keep:
            shutil.copyfile(page, args.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
