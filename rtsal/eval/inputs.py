"""What ``rtsal eval`` scores: photos, folders of photos and clips, and frames of video files (torch-free).

A photo is one sample; a video file gives every ``every``-th decoded frame (0, N, 2N, ...), each a sample
named ``CLIP#FRAME`` that records the clip and the frame index. A folder holds photos and clips (sorted, not
recursive). Problems are one-line errors: a folder with nothing to score, a file that is not there, a video
that cannot be decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.errors import UsageError, VideoIOError
from rtsal.io.images import IMAGE_SUFFIXES, expand_images, read_rgb

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DATA", "VIDEO_SUFFIXES", "Sample", "default_inputs", "expand_inputs", "load_samples"]

DATA = Path(__file__).resolve().parents[1] / "data"
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}


@dataclass(frozen=True)
class Sample:
    """One image to score: a photo (``clip`` and ``frame`` None) or one frame of a clip."""

    name: str  # "coffee.jpg" or "demo.mp4#30"
    path: Path
    image: np.ndarray  # RGB uint8 (H, W, 3)
    clip: str | None = None
    frame: int | None = None
    pts: float | None = None  # seconds, for frames

    def describe(self) -> dict[str, Any]:
        """The JSON record of where this sample came from."""
        return {
            "name": self.name,
            "path": str(self.path),
            "clip": self.clip,
            "frame": self.frame,
            "pts": self.pts,
        }


def default_inputs() -> list[Path]:
    """The bundled evaluation set: the demo photos and clip (``data``) and the photos in ``data/eval``."""
    return expand_inputs([DATA, DATA / "eval"])


def expand_inputs(paths: Iterable[str | Path], *, videos: bool = True) -> list[Path]:
    """Files as given, folders expanded to the photos (and, with ``videos``, the clips) inside them."""
    if not videos:
        return expand_images(paths)
    return expand_images(paths, IMAGE_SUFFIXES | VIDEO_SUFFIXES, kind="image or video")


def _frames(path: Path, every: int) -> Iterator[Sample]:
    from rtsal.io.video import VideoReader

    with VideoReader(path) as reader:
        for frame in reader:
            if frame.index % every == 0:
                yield Sample(
                    name=f"{path.name}#{frame.index}",
                    path=path,
                    image=frame.image,
                    clip=path.name,
                    frame=frame.index,
                    pts=round(float(frame.pts), 6),
                )


def load_samples(paths: Iterable[Path], every: int = 30) -> list[Sample]:
    """Read every photo and the chosen frames of every clip. Photos are told apart from clips by their
    suffix; a file with any other suffix is opened as a video (so a wrong file fails with the decoder's
    reason, not silently)."""
    if every < 1:
        raise UsageError(f"--every must be at least 1, got {every}")
    out: list[Sample] = []
    for p in paths:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(Sample(name=p.name, path=p, image=read_rgb(p)))
        else:
            found = list(_frames(p, every))
            if not found:  # VideoReader raises when nothing decodes; kept for a clip cut to zero frames
                raise VideoIOError(f"no frames read from {p}")
            out.extend(found)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UsageError(
            f"two inputs are both named {dup}: give each photo or clip once, with distinct names"
        )
    return out
