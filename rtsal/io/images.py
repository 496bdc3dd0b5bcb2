"""Image files: expand folders to image paths, read RGB, write RGB (torch-free)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.errors import VideoIOError
from rtsal.outputs import atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np

__all__ = ["IMAGE_SUFFIXES", "expand_images", "read_rgb", "write_rgb"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def expand_images(
    paths: Iterable[str | Path], suffixes: Collection[str] | None = None, kind: str = "image"
) -> list[Path]:
    """Files as given, directories expanded to the image files inside (sorted, not recursive)."""
    out: list[Path] = []
    wanted = IMAGE_SUFFIXES if suffixes is None else suffixes
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in wanted and q.is_file())
            if not found:
                raise VideoIOError(f"no {kind} files in directory {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise VideoIOError(f"no such file: {p}")
    return out


def read_rgb(path: Path, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """An image file -> RGB uint8 (H, W, 3); grey and alpha images are converted.

    What the decoder says on stderr while decoding (libjpeg's "Corrupt JPEG data: ..." for a damaged file
    that still decodes) is passed to ``warn`` as one line instead of being printed raw."""
    import cv2
    import numpy as np

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise VideoIOError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.size:
        raise VideoIOError(f"cannot read {path}: the file is empty")
    with _captured_stderr() as said:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        _flush_c_streams()  # libjpeg's warnings sit in C's stdio buffer until flushed
    if image is None:
        raise VideoIOError(f"cannot read {path}: not an image OpenCV can decode")
    lines = [line.strip() for line in said().splitlines() if line.strip()]
    if lines and warn is not None:
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        warn(f"the decoder reported damage: {lines[0]}{more}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _flush_c_streams() -> None:
    """``fflush(NULL)``: write out what C code has buffered on its stdio streams."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Catch what C code writes to file descriptor 2 meanwhile; yields a function returning it."""
    import sys

    text = ""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, closed): nothing to catch
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read(4096).decode("utf-8", "replace")


def write_rgb(path: Path, image: np.ndarray) -> None:
    """Write RGB uint8 to PNG/JPEG atomically (the path holds the old file or the complete new one)."""
    import cv2

    try:
        ok, buf = cv2.imencode(Path(path).suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise VideoIOError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes())
