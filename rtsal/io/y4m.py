"""A YUV4MPEG2 (``.y4m``) writer: raw 4:2:0 frames behind a one-line header. Chromium's fake camera plays
such a file (``--use-file-for-fake-video-capture``), in a loop, at the header's frame rate: the browser
tests and benchmarks of ``rtsal serve`` feed the page a real video through it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["video_to_y4m", "write_y4m"]


def write_y4m(frames: Iterable[np.ndarray], path: str | Path, width: int, height: int, fps: int = 30) -> int:
    """Write RGB uint8 frames (any size: each is resized to ``width`` x ``height``, both even) to ``path``;
    returns how many were written."""
    import cv2

    if width % 2 or height % 2 or width < 2 or height < 2:
        raise ValueError(f"width and height must be even and positive, got {width}x{height}")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    n = 0
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            if rgb.shape[:2] != (height, width):
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
            n += 1
    if not n:
        raise ValueError("no frame to write")
    return n


def video_to_y4m(
    source: str | Path, path: str | Path, width: int = 640, height: int = 480, fps: int = 30,
    max_frames: int | None = None,
) -> int:
    """A video file (e.g. the bundled demo clip) -> a ``.y4m`` at ``width`` x ``height`` and ``fps``."""
    from itertools import islice

    from rtsal.io.video import VideoReader

    with VideoReader(source) as reader:
        frames = (f.image for f in reader)
        return write_y4m(islice(frames, max_frames), path, width, height, fps)
