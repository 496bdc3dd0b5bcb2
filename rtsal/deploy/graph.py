"""What ``rtsal export --format onnx`` traces: the one graph of a spec with the host assembly inside it.

:class:`ExportGraph` wraps the :class:`~rtsal.engine.graph.ExplainGraph` that every backend runs
(:func:`rtsal.engine.backends.common.graph_of`) and does in-graph what
:func:`rtsal.engine.result.assemble` does on the host, by calling the same function
(:func:`rtsal.engine.result.assemble_maps`) with a traceable resize (``F.interpolate``, bilinear,
align_corners=False, the sampling of the host's OpenCV resize): upsampling to the model input's size, the
weighted combination, the CAM's range norm, FastCAM and the non-class map. Which map ``saliency`` is comes
from :data:`rtsal.engine.result.MAP_OF_METHOD`. A file that any ONNX runtime can use without rtsal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtsal.engine.graph import ExplainGraph
from rtsal.engine.result import MAP_FIELDS, MAP_OF_METHOD, assemble_maps
from rtsal.engine.saliency.combine import resize_bilinear
from rtsal.engine.spec import FastCAMSpec

__all__ = ["OUTPUTS", "ExportGraph", "UInt8Input"]

# the exported file's output names, in order
OUTPUTS = ("logits", "saliency", *MAP_FIELDS)


class ExportGraph(nn.Module):
    """``forward(images)``: a normalised batch (N, 3, h, w) -> the outputs named by :data:`OUTPUTS`:
    ``logits`` (N, classes), ``saliency`` (the spec's method's map), ``scales`` (N, L, h, w), ``smoe``,
    ``cam``, ``fused``, ``nonclass`` (N, h, w), every map in [0, 1] at the model input's size, the CAM for
    the top-1 class. ``graph``: :func:`~rtsal.engine.backends.common.graph_of` of ``spec``."""

    def __init__(self, graph: ExplainGraph, spec: FastCAMSpec) -> None:
        super().__init__()
        self.inner = graph  # not "graph": the exporter's FX module has an attribute of that name
        w = torch.tensor(spec.layer_weights, dtype=torch.float32)
        self.register_buffer("weights", w / w.sum(), persistent=False)
        self.pick = MAP_OF_METHOD[spec.method]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        size = (int(x.shape[2]), int(x.shape[3]))
        top1 = torch.full_like(x[:, 0, 0, 0], -1, dtype=torch.long)  # (N,) -1: explain the top-1 class
        logits, _, _, _, cam_small, *maps = self.inner(x, top1)
        named = {"logits": logits, **assemble_maps(maps, cam_small, size, self.weights, resize_bilinear)}
        named["saliency"] = named[self.pick]
        return tuple(named[name] for name in OUTPUTS)


class UInt8Input(nn.Module):
    """Wraps a graph so it takes raw RGB uint8 frames (N, FH, FW, 3): resize to (H, W) and normalise inside.

    The resize is bilinear with antialiasing (``F.interpolate(antialias=True)``, ONNX ``Resize`` with
    ``antialias=1``); the engine resizes with OpenCV (INTER_AREA when shrinking), so maps agree closely but
    not bit for bit.
    """

    def __init__(self, graph: nn.Module, mean: Sequence[float], std: Sequence[float], size: tuple[int, int]):
        super().__init__()
        self.inner = graph  # not "graph": the exporter's FX module has an attribute of that name
        self.size = (int(size[0]), int(size[1]))
        m = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s))
        self.register_buffer("shift", m / s)

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        x = frames.permute(0, 3, 1, 2).to(torch.float32)
        if tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.inner(x * self.scale - self.shift)
