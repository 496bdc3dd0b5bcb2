"""What input a model takes and how its activations look, by model kind.

- ``image``: (N, 3, H, W), activations (N, C, h, w): the probe finds the scale ends by shape.
- ``clip``: (N, 3, T, H, W), activations (N, C, T, h, w): the probe runs on a clip (rtsal/engine/clips.py).
- ``vit``, ``swin``: images in, token sequences out; the registry names the scale blocks and
  rtsal/engine/tokens.py turns tokens into grids.

The Explainer and the comparison methods ask this module, so the per-kind branches live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.clips import ClipPreprocess, check_clip_tensor
from rtsal.engine.preprocess import Preprocess
from rtsal.engine.probe import Probe, probe
from rtsal.engine.tokens import LAYOUTS, probe_tokens, to_grid
from rtsal.errors import UsageError

__all__ = ["KINDS", "grid_fn", "make_preprocess", "model_input", "probe_model"]

KINDS = ("image", "clip", *LAYOUTS)


def probe_model(
    module: nn.Module,
    kind: str,
    layers: Sequence[str] | None,
    size: int | tuple[int, int],
    min_frames: int = 1,
) -> Probe:
    """The scale-end layers of ``module`` for its kind (see :func:`rtsal.engine.probe.probe`)."""
    if kind == "image":
        return probe(module, layers=layers)
    if kind == "clip":
        h = size if isinstance(size, int) else size[0]
        w = -(-h * 3 // 2 // 32) * 32  # not square, so the probe can tell spatial maps from other outputs
        return probe(module, layers=layers, size=(h, w), frames=max(min_frames, 8))
    if kind in LAYOUTS:
        if not layers:
            raise UsageError(f"a {kind} transformer needs its scale blocks named (--layers NAME,...)")
        side = size if isinstance(size, int) else size[0]
        return probe_tokens(module, layers, kind, side)
    raise ValueError(f"unknown model kind {kind!r}: one of {', '.join(KINDS)}")


def make_preprocess(
    kind: str,
    mean: Sequence[float],
    std: Sequence[float],
    size: int | tuple[int, int],
    device: torch.device,
    channels_last: bool,
    min_frames: int = 1,
) -> Callable[[object], Tensor]:
    """uint8 frames (or clips) -> normalised model input for ``kind``."""
    if kind == "clip":
        return ClipPreprocess(mean, std, size, device, min_frames)
    return Preprocess(mean, std, size, device, channels_last)


def model_input(
    kind: str,
    preprocess: Callable[[object], Tensor],
    images: object,
    device: torch.device,
    channels_last: bool,
    min_frames: int = 1,
) -> tuple[Tensor, tuple[int, ...]]:
    """Images or clips as ``Explainer.explain`` takes them -> (model input, output size).

    Images: (N, 3, h, w) and (H, W). Clips: (N, 3, T, h, w) and (T, H, W) (maps come back per frame).
    """
    floating = isinstance(images, Tensor) and images.is_floating_point()
    if kind != "clip":
        if floating and images.dim() == 5 or not floating and np.ndim(images) == 5:  # type: ignore[union-attr]
            raise UsageError("this is an image model and got a clip: use a clip model (e.g. r3d_18)")
        if floating:
            if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:  # type: ignore[union-attr]
                raise UsageError(
                    f"a preprocessed batch must be (N, 3, h, w) with N > 0, got {tuple(images.shape)}"  # type: ignore[union-attr]
                )
            x = images.to(device)  # type: ignore[union-attr]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x, (int(x.shape[2]), int(x.shape[3]))
        x = preprocess(images)
        shape = images.shape if hasattr(images, "shape") else np.shape(images[0])  # type: ignore[index]
        return x, (int(shape[-3]), int(shape[-2]))
    if floating:
        check_clip_tensor(images, min_frames)  # type: ignore[arg-type]
        x = images.to(device)  # type: ignore[union-attr]
        return x, (int(x.shape[2]), int(x.shape[3]), int(x.shape[4]))
    x = preprocess(images)
    shape = images.shape if hasattr(images, "shape") else (len(images), *np.shape(images[0]))  # type: ignore[arg-type]
    return x, (int(shape[-4]), int(shape[-3]), int(shape[-2]))


def grid_fn(kind: str) -> Callable[[Tensor], Tensor] | None:
    """How to turn a scale-end output into an (N, C, ...) grid: None when it already is one."""
    if kind in LAYOUTS:
        return lambda t: to_grid(t, kind)
    return None
