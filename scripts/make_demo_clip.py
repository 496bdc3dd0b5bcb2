"""Make ``rtsal/data/demo.mp4``, the short clip ``rtsal demo`` plays, from the bundled photographs.

Each photograph (``rtsal/data/*.jpg``, licences in ``LICENSE-PHOTOS.md`` there) gets a slow pan and zoom
(a "Ken Burns" move: a 4:3 window glides and shrinks or grows across the photo, with smooth easing), and the
shots are joined by short cross-fades. The moves are fixed below, so the clip is reproducible:

    python scripts/make_demo_clip.py                     # writes rtsal/data/demo.mp4
    python scripts/make_demo_clip.py -o /tmp/demo.mp4 --fps 15 --seconds 3

Encoded with PyAV as H.264 (libx264, yuv420p, CRF 26, preset slow); 480x360 at 15 fps stays well under 2 MB.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1] / "rtsal" / "data"

# (photo, start window, end window): windows are (centre x, centre y, width) as fractions of the photo's
# width and height; the window height follows from the output's 4:3 aspect. Windows stay >= ~300 px wide, so
# no photo is enlarged much more than 1.5x.
MOVES = (
    ("chelsea", (0.50, 0.50, 0.98), (0.42, 0.45, 0.70)),  # zoom in on the cat's face
    ("coffee", (0.38, 0.50, 0.55), (0.60, 0.50, 0.62)),  # pan across the cup
    ("rocket", (0.50, 0.55, 0.50), (0.50, 0.50, 0.75)),  # zoom out from the launch
    ("astronaut", (0.55, 0.35, 0.62), (0.45, 0.55, 0.80)),  # drift down and out
)


def ease(t: float) -> float:
    """Smoothstep: starts and ends at rest."""
    return t * t * (3.0 - 2.0 * t)


def window(photo: np.ndarray, cx: float, cy: float, fw: float,
           aspect: float) -> tuple[float, float, float, float]:
    """A window (x, y, w, h) in pixels, inside the photo, with w / h = aspect."""
    H, W = photo.shape[:2]
    w = min(fw * W, W, H * aspect)
    h = w / aspect
    x = min(max(cx * W - w / 2, 0.0), W - w)
    y = min(max(cy * H - h / 2, 0.0), H - h)
    return x, y, w, h


def crop(photo: np.ndarray, rect: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The window ``rect`` resampled to ``size`` = (width, height) at a sub-pixel position (smooth motion)."""
    x, y, w, h = rect
    out_w, out_h = size
    s = out_w / w
    m = np.array([[s, 0.0, -x * s], [0.0, out_h / h, -y * out_h / h]], dtype=np.float64)
    return cv2.warpAffine(photo, m, size, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def shots(size: tuple[int, int], fps: float, seconds: float):
    """One list of RGB frames per photograph."""
    aspect = size[0] / size[1]
    n = round(fps * seconds)
    for name, start, end in MOVES:
        bgr = cv2.imread(str(DATA / f"{name}.jpg"))
        if bgr is None:
            raise SystemExit(f"cannot read {DATA / name}.jpg")
        photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frames = []
        for k in range(n):
            t = ease(k / max(1, n - 1))
            cx, cy, fw = (a + (b - a) * t for a, b in zip(start, end, strict=True))
            frames.append(crop(photo, window(photo, cx, cy, fw, aspect), size))
        yield frames


def clip(size: tuple[int, int], fps: float, seconds: float, fade: float):
    """All frames: the shots joined by cross-fades of ``fade`` seconds."""
    nf = round(fps * fade)
    previous: list[np.ndarray] | None = None
    for frames in shots(size, fps, seconds):
        if previous is None:
            previous = frames
            continue
        yield from previous[: len(previous) - nf]
        tail = previous[len(previous) - nf :]
        for k, a in enumerate(tail):
            w = (k + 1) / (nf + 1)
            yield cv2.addWeighted(a, 1.0 - w, frames[k], w, 0.0)
        previous = frames[nf:]
    yield from previous or []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default=str(DATA / "demo.mp4"))
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--seconds", type=float, default=3.5, help="per photograph")
    p.add_argument("--fade", type=float, default=0.5, help="cross-fade, seconds")
    p.add_argument("--crf", type=int, default=26)
    args = p.parse_args()

    n = 0
    with av.open(args.output, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(args.fps))
        stream.width, stream.height, stream.pix_fmt = args.width, args.height, "yuv420p"
        stream.options = {"crf": str(args.crf), "preset": "slow"}
        for n, rgb in enumerate(clip((args.width, args.height), args.fps, args.seconds, args.fade), start=1):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = n - 1
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output}: {n} frames, {args.width}x{args.height} at {args.fps} fps, "
          f"{n / args.fps:.1f} s, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
