"""Image files: expand folders to image paths, read RGB, write RGB (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.errors import VideoIOError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["IMAGE_SUFFIXES", "expand_images", "read_rgb", "write_rgb"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def expand_images(paths: list[str]) -> list[Path]:
    """Files as given, directories expanded to the image files inside (sorted, not recursive)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise VideoIOError(f"no image files in directory {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise VideoIOError(f"no such file: {p}")
    return out


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> RGB uint8 (H, W, 3); grey and alpha images are converted."""
    import cv2
    import numpy as np

    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise VideoIOError(f"cannot read {path}: not an image OpenCV can decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: Path, image: np.ndarray) -> None:
    """Write RGB uint8 to PNG/JPEG, raising VideoIOError when it cannot be written."""
    import cv2

    ok = False
    try:
        ok, buf = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if ok:
            path.write_bytes(buf.tobytes())
    except OSError as exc:
        raise VideoIOError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not ok:
        raise VideoIOError(f"cannot encode {path}")
