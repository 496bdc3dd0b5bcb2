"""What input a model takes and how its activations look, by model kind.

- ``image``: (N, 3, H, W), activations (N, C, h, w): the probe finds the scale ends by shape.
- ``clip``: (N, 3, T, H, W), activations (N, C, T, h, w): the probe runs on a clip (rtsal/engine/clips.py).
- ``vit``, ``swin``: images in, token sequences out; the registry names the scale blocks and
  rtsal/engine/tokens.py turns tokens into grids.
- ``auto`` (a model from timm, Hugging Face, torchvision by name, a user's code): the probe reads each
  scale's layout and says ``image`` (every scale an (N, C, h, w) map) or ``tokens`` (some are token
  sequences or channels-last: :class:`rtsal.engine.tokens.Grids` converts them).

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
from rtsal.engine.tokens import LAYOUTS, Grids, probe_tokens, to_grid
from rtsal.errors import UsageError

__all__ = ["KINDS", "clip_input", "grid_fn", "make_preprocess", "probe_model", "resolve_kind"]

KINDS = ("image", "clip", "auto", "tokens", *LAYOUTS)


def probe_model(
    module: nn.Module,
    kind: str,
    layers: Sequence[str] | None,
    size: int | tuple[int, int],
    min_frames: int = 1,
    candidates: Sequence[str] | None = None,
) -> Probe:
    """The scale-end layers of ``module`` for its kind (see :func:`rtsal.engine.probe.probe`).

    ``size``: the short side (int) or (h, w) the model will run at. The probe runs at 224 x 320 (not square,
    multiples of 32: every stride exact, so spatial maps are told from other outputs even where a small
    run size rounds a stride up); a model that refuses it is probed and run at its own square size, and a
    non-square (h, w) that is the only size it takes at exactly that. ``candidates``: the stages a library
    names."""
    if kind in ("image", "auto", "tokens"):
        own = int(min(size)) if isinstance(size, tuple) else int(size)
        try:
            return probe(module, layers=layers, size=(224, 320), candidates=candidates, own=own)
        except UsageError:
            if not isinstance(size, tuple) or size[0] == size[1]:
                raise
            return probe(module, layers=layers, candidates=candidates, fixed=(int(size[0]), int(size[1])))
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
    interpolation: str = "bilinear",
) -> Callable[[object], Tensor]:
    """uint8 frames (or clips) -> normalised model input for ``kind``."""
    if kind == "clip":
        return ClipPreprocess(mean, std, size, device, min_frames)
    return Preprocess(mean, std, size, device, channels_last, interpolation)


def clip_input(
    preprocess: Callable[[object], Tensor],
    clips: object,
    device: torch.device,
    min_frames: int = 1,
) -> tuple[Tensor, tuple[int, int, int]]:
    """Clips as ``Explainer.explain`` takes them (uint8 (T, H, W, 3) / (N, T, H, W, 3) or a preprocessed
    (N, 3, T, h, w) float tensor) -> (model input (N, 3, T, h, w), the (T, H, W) the maps come back at)."""
    if isinstance(clips, Tensor) and clips.is_floating_point():
        check_clip_tensor(clips, min_frames)
        if not bool(torch.isfinite(clips).all()):
            raise UsageError("the input clip holds NaN or infinite values")
        x = clips.to(device, torch.float32)
        return x, (int(x.shape[2]), int(x.shape[3]), int(x.shape[4]))
    x = preprocess(clips)
    shape = clips.shape if hasattr(clips, "shape") else (len(clips), *np.shape(clips[0]))  # type: ignore[arg-type]
    return x, (int(shape[-4]), int(shape[-3]), int(shape[-2]))


def grid_fn(kind: str, info: Probe | None = None) -> Callable[[Tensor], Tensor] | None:
    """How to turn a scale-end output into an (N, C, ...) grid: None when it already is one."""
    if kind in LAYOUTS:
        return lambda t: to_grid(t, kind)
    if info is not None and info.kind == "tokens":
        return Grids(info.grids)
    return None


def resolve_kind(kind: str, info: Probe) -> str:
    """``auto`` or ``image`` -> what the probe found (``image``, or ``tokens`` where a scale is channels-last
    or a token sequence); other kinds stay."""
    return info.kind if kind in ("auto", "image") else kind
