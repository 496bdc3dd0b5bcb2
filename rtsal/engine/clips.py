"""Video-clip classifiers (3D convolutions over time): clip preprocessing and per-frame results.

A clip model takes (N, 3, T, H, W); its scale-end activations are (N, C, T, h, w). The maths in
:mod:`rtsal.engine.saliency` reduces over the channel axis only and normalises over every other axis, so
the same functions give per-clip maps (N, T, h, w), upsampled trilinearly in time and space to the clip's
frames: (N, T, H, W). This module turns uint8 clips into model input and a clip result into the result of
one of its frames (what the views draw).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np
import torch
from torch import Tensor

from rtsal.engine.preprocess import model_size
from rtsal.errors import UsageError
from rtsal.types import SaliencyResult

__all__ = ["ClipPreprocess", "as_clip_batch", "check_clip_tensor", "frame_result"]


def as_clip_batch(clips: np.ndarray | Tensor | Sequence[np.ndarray], min_frames: int = 1) -> np.ndarray:
    """Check and stack RGB uint8 clips: (T, H, W, 3) or (N, T, H, W, 3) -> (N, T, H, W, 3).

    A single image (H, W, 3) or a list of frames of different sizes is refused with one line, and so is a
    clip shorter than ``min_frames``.
    """
    if isinstance(clips, Tensor):
        clips = clips.detach().cpu().numpy()
    if isinstance(clips, (list, tuple)):
        if not clips:
            raise UsageError("empty clip: give at least one frame")
        shapes = {np.shape(f) for f in clips}
        if len(shapes) != 1:
            raise UsageError(f"frames of one clip must share a size, got {sorted(shapes)}")
        clips = np.stack([np.asarray(f) for f in clips])
    if not isinstance(clips, np.ndarray):
        raise UsageError(f"expected an RGB uint8 clip, got {type(clips).__name__}")
    if clips.ndim == 3 and clips.shape[-1] == 3:
        raise UsageError(
            f"a clip model takes clips (T, H, W, 3) or (N, T, H, W, 3), got one image {clips.shape}"
        )
    if clips.ndim == 4:
        clips = clips[None]
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise UsageError(f"expected an RGB clip (T, H, W, 3) or a batch (N, T, H, W, 3), got {clips.shape}")
    if clips.shape[0] == 0:
        raise UsageError("empty batch: give at least one clip")
    if clips.shape[1] < min_frames:
        raise UsageError(f"clip too short: {clips.shape[1]} frame(s), the model needs at least {min_frames}")
    if clips.shape[2] < 8 or clips.shape[3] < 8:
        raise UsageError(f"frames too small: {clips.shape[3]}x{clips.shape[2]} (need at least 8x8)")
    if clips.dtype != np.uint8:
        raise UsageError(f"expected uint8 pixels (0-255), got {clips.dtype}; preprocess floats yourself")
    return clips


def check_clip_tensor(x: Tensor, min_frames: int = 1) -> None:
    """A preprocessed clip batch must be (N, 3, T, h, w) with N > 0 and T >= ``min_frames``."""
    if x.dim() != 5 or x.shape[1] != 3 or x.shape[0] == 0:
        raise UsageError(
            f"a preprocessed clip batch must be (N, 3, T, h, w) with N > 0, got {tuple(x.shape)}"
        )
    if x.shape[2] < min_frames:
        raise UsageError(f"clip too short: {x.shape[2]} frame(s), the model needs at least {min_frames}")


class ClipPreprocess:
    """Resize every frame (INTER_AREA when shrinking) and normalise: uint8 (T, H, W, 3) or
    (N, T, H, W, 3) -> float32 (N, 3, T, h, w) on ``device``. ``size`` as for images
    (:func:`rtsal.engine.preprocess.model_size`)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        size: int | tuple[int, int] = 112,
        device: torch.device | str = "cpu",
        min_frames: int = 1,
    ) -> None:
        if isinstance(size, int) and size < 32:
            raise UsageError(f"input size must be at least 32, got {size}")
        self.size = size
        self.device = torch.device(device)
        self.min_frames = min_frames
        m = torch.tensor(mean, dtype=torch.float32)
        s = torch.tensor(std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * s)).view(1, 3, 1, 1, 1).to(self.device)
        self._shift = (m / s).view(1, 3, 1, 1, 1).to(self.device)

    def __call__(self, clips: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        batch = as_clip_batch(clips, self.min_frames)
        n, t, h, w = batch.shape[:4]
        mh, mw = model_size(h, w, self.size)
        if (mh, mw) != (h, w):
            interp = cv2.INTER_AREA if mh * mw < h * w else cv2.INTER_LINEAR
            flat = batch.reshape(n * t, h, w, 3)
            batch = np.stack([cv2.resize(f, (mw, mh), interpolation=interp) for f in flat]).reshape(
                n, t, mh, mw, 3
            )
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 4, 1, 2, 3).float()
        return (x * self._scale - self._shift).contiguous()


_FRAME_FIELDS = ("saliency", "smoe", "cam", "fused", "nonclass")


def frame_result(result: SaliencyResult, t: int, n: int = 0) -> SaliencyResult:
    """The result of frame ``t`` of clip ``n``, shaped as an image result: maps (1, H, W), scales
    (1, L, H, W), the clip's logits, top-k and target. The views and LOVI draw it as they draw an image's."""
    maps = {k: getattr(result, k) for k in _FRAME_FIELDS}
    if maps["saliency"] is None or maps["saliency"].dim() != 4:
        raise ValueError("frame_result needs a clip result with (N, T, H, W) maps")
    sel = {k: (v[n : n + 1, t] if v is not None else None) for k, v in maps.items()}
    scales = result.scales[n : n + 1, :, t] if result.scales is not None else None
    topk = replace(
        result.topk,
        indices=result.topk.indices[n : n + 1],
        probs=result.topk.probs[n : n + 1],
        labels=result.topk.labels[n : n + 1],
    )
    return replace(
        result,
        logits=result.logits[n : n + 1],
        topk=topk,
        target=result.target[n : n + 1],
        scales=scales,
        **sel,
    )
