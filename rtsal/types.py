"""Frozen value types passed between the stages of rtsal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep `rtsal --help` free of torch and numpy
    import numpy as np
    import torch


@dataclass(frozen=True)
class LayerInfo:
    """One call of one module: where it is, and, for the scale-end layers the probe finds, what it produces
    for a 224x224 input. The one layer type of rtsal; :attr:`label` is its one printed form, ``NAME`` or
    ``NAME#CALL`` (what ``--layers`` and ``--target-layer`` take)."""

    name: str  # dotted module name, as in ``model.named_modules()``
    call: int = 0  # which call of the module in one forward pass (shared modules run more than once)
    channels: int = 0
    stride: int = 0  # input size / output size
    size: tuple[int, int] = (0, 0)  # (h, w) at 224x224 input
    relu: bool = False  # the output can be negative: ReLU is applied before the channel statistics

    @property
    def label(self) -> str:
        """``NAME`` for the first call of a module, ``NAME#CALL`` for a later one."""
        return self.name if self.call == 0 else f"{self.name}#{self.call}"

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class TopK:
    """Top-k classes per image: ``indices`` and ``probs`` are (N, k); ``labels`` is N lists of k names."""

    indices: torch.Tensor
    probs: torch.Tensor
    labels: list[list[str]]


@dataclass(frozen=True)
class SaliencyResult:
    """What one explanation of a batch of N images returns.

    Every map is float32 in [0, 1] at the input images' height H and width W. ``saliency`` is the map of the
    method that was asked for; the engine fills the others too, slower comparison methods may leave them None.
    """

    logits: torch.Tensor  # (N, classes)
    topk: TopK
    target: torch.Tensor  # (N,) class index the class-specific maps explain
    saliency: torch.Tensor  # (N, H, W) the selected method's map
    method: str
    scales: torch.Tensor | None = None  # (N, L, H, W) normalised per-scale maps
    smoe: torch.Tensor | None = None  # (N, H, W) weighted combination of ``scales``
    cam: torch.Tensor | None = None  # (N, H, W) Grad-CAM or Grad-CAM++ of ``target``
    fused: torch.Tensor | None = None  # (N, H, W) smoe * cam: FastCAM
    nonclass: torch.Tensor | None = None  # (N, H, W) smoe * (1 - cam)
    layers: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)  # milliseconds per stage, whole batch
    engine: str = "eager"  # the backend that drew it: eager, compiled, openvino, onnxruntime, ...


@dataclass(frozen=True)
class Frame:
    """One decoded or captured frame: ``image`` is RGB uint8 (H, W, 3)."""

    index: int
    pts: float | None  # presentation time in seconds, None when unknown
    t_capture: float  # time.perf_counter() when it was read
    image: np.ndarray
    extra: Any = None
