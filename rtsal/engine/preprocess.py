"""Turn RGB uint8 frames into the normalised float batch a model expects."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from rtsal.errors import UsageError

# how a frame is enlarged to the model's size, by the name a model's config gives (shrinking uses area)
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                  "lanczos": cv2.INTER_LANCZOS4, "box": cv2.INTER_AREA, "hamming": cv2.INTER_LINEAR}
MAX_ASPECT = 4  # the model input's long side is at most this many times its short side


def model_size(h: int, w: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """The (height, width) the model sees for an (h, w) frame.

    An int scales the short side to ``size`` and the long side in proportion, rounded to a multiple of 32
    (so every scale has an exact stride) and at most ``MAX_ASPECT`` times the short side: a wider frame is
    squeezed, so the model input (and memory) is bounded for any aspect ratio. A tuple is used as (height,
    width) as it is.
    """
    if not isinstance(size, int):
        return int(size[0]), int(size[1])
    if h == w:
        return size, size
    cap = max(32, (MAX_ASPECT * size) // 32 * 32)
    if h < w:
        return size, min(cap, max(32, int(round(w * size / h / 32)) * 32))
    return min(cap, max(32, int(round(h * size / w / 32)) * 32)), size


def as_image_batch(images: np.ndarray | Tensor | Sequence[np.ndarray]) -> np.ndarray:
    """Check and stack RGB uint8 images into (N, H, W, 3)."""
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, (list, tuple)):
        if not images:
            raise UsageError("empty batch: give at least one image")
        shapes = {np.shape(im) for im in images}
        if len(shapes) != 1:
            raise UsageError(f"images in one batch must share a size, got {sorted(shapes)}")
        images = np.stack([np.asarray(im) for im in images])
    if not isinstance(images, np.ndarray):
        raise UsageError(f"expected an RGB uint8 array, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim == 5 and images.shape[-1] == 3:
        raise UsageError(f"got a clip {images.shape} for an image model: use a clip model (e.g. r3d_18)")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UsageError(f"expected an RGB image (H, W, 3) or a batch (N, H, W, 3), got shape {images.shape}")
    if images.shape[0] == 0:
        raise UsageError("empty batch: give at least one image")
    if images.shape[1] < 8 or images.shape[2] < 8:
        raise UsageError(f"image too small: {images.shape[2]}x{images.shape[1]} (need at least 8x8)")
    if images.dtype != np.uint8:
        raise UsageError(f"expected uint8 pixels (0-255), got {images.dtype}; preprocess floats yourself")
    return images


class Preprocess:
    """Resize (INTER_AREA when shrinking, the model's ``interpolation`` when enlarging) and normalise RGB
    uint8 frames.

    ``__call__(images)`` takes (H, W, 3) or (N, H, W, 3) uint8 and returns (N, 3, h, w) float32 on ``device``.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        size: int | tuple[int, int] = 224,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        interpolation: str = "bilinear",
    ) -> None:
        if isinstance(size, int) and size < 32:
            raise UsageError(f"input size must be at least 32, got {size}")
        self.size = size
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.enlarge = INTERPOLATIONS.get(interpolation, cv2.INTER_LINEAR)
        m = torch.tensor(mean, dtype=torch.float32)
        s = torch.tensor(std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * s)).view(1, 3, 1, 1).to(self.device)
        self._shift = (m / s).view(1, 3, 1, 1).to(self.device)

    def __call__(self, images: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        batch = as_image_batch(images)
        h, w = batch.shape[1:3]
        mh, mw = model_size(h, w, self.size)
        if (mh, mw) != (h, w):
            interp = cv2.INTER_AREA if mh * mw < h * w else self.enlarge
            batch = np.stack([cv2.resize(im, (mw, mh), interpolation=interp) for im in batch])
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float()
        x = x * self._scale - self._shift
        return x.contiguous(
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
        )
