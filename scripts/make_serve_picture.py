"""The docs' picture of ``rtsal serve``: the page in Debian's headless Chromium (driven by Playwright), its
fake camera playing the bundled demo clip at 640x480, after an upload of the bundled coffee photo.

    python scripts/make_serve_picture.py                  # -> docs/serve-page.jpg
    python scripts/make_serve_picture.py --wait 20 -o /tmp/page.jpg
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from browser_client import browser, server, wait_displayed  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "serve-page.jpg"))
    p.add_argument("--wait", type=float, default=15.0, help="seconds of live frames before the picture")
    p.add_argument("--serve-args", default="", help="extra rtsal serve options")
    args = p.parse_args()

    from rtsal.io.y4m import video_to_y4m

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.y4m"
        video_to_y4m(ROOT / "rtsal" / "data" / "demo.mp4", clip, 640, 480, 30)
        with server(*args.serve_args.split()) as (_, url), browser(clip) as b:
            page = b.new_page(viewport={"width": 1100, "height": 820})
            page.goto(url)
            wait_displayed(page, 10, 300)
            page.set_input_files("#upload", str(ROOT / "rtsal" / "data" / "coffee.jpg"))
            deadline = time.time() + 300
            while not page.evaluate("rtsal.stats.upload") and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(args.wait)
            page.screenshot(path=args.output, type="jpeg", quality=82, full_page=True)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
