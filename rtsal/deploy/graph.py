"""The exportable graph: one ``nn.Module`` whose forward runs the classifier and computes every map.

The scale-end activations come from the engine's :class:`~rtsal.engine.hooks.ActivationRecorder` (forward
hooks run while the exporter traces, so they are part of the graph); the maps from the engine's pure tensor
functions (channel statistic, normalisation, closed-form CAM of a GAP -> linear head). Upsampling uses
``F.interpolate`` (bilinear, align_corners=False), the operator the engine's OpenCV resize matches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtsal.engine.hooks import ActivationRecorder
from rtsal.engine.saliency.cam import cam_from_linear_head
from rtsal.engine.saliency.combine import combine_maps, resize_bilinear
from rtsal.engine.saliency.fastcam import fastcam_maps, scale_maps
from rtsal.engine.saliency.norm import NORMS
from rtsal.engine.saliency.smoe import STATISTICS
from rtsal.types import LayerInfo

__all__ = ["ALL_OUTPUTS", "SMOE_OUTPUTS", "SaliencyGraph", "UInt8Input"]

# output names, in order; models without a closed-form CAM export the SMOE ones only
ALL_OUTPUTS = ("logits", "saliency", "scales", "smoe", "cam", "fused", "nonclass")
SMOE_OUTPUTS = ("logits", "saliency", "scales", "smoe")


class SaliencyGraph(nn.Module):
    """``forward(x)``: a normalised batch (N, 3, H, W) -> logits (N, classes) and the maps at (H, W).

    Returns a tuple in the order of :attr:`outputs`: ``logits``, ``saliency`` (the chosen method's map),
    ``scales`` (N, L, H, W), ``smoe`` (N, H, W) and, when ``head_weight`` is given (a GAP -> linear head),
    ``cam``, ``fused`` (SMOE x CAM) and ``nonclass`` (SMOE x (1 - CAM)), each (N, H, W) in [0, 1]. The CAM
    explains the top-1 class. Only traceable while ``recorder`` (an entered recorder of ``layers`` on
    ``model``) is open. ``relu[l]``: apply ReLU before the statistic at scale ``l``; ``cam_relu``: before the
    CAM (the last scale-end tensor can be negative), as the engine does.
    """

    def __init__(
        self,
        model: nn.Module,
        recorder: ActivationRecorder,
        relu: Sequence[bool],
        cam_relu: bool,
        weights: Sequence[float],
        statistic: str,
        norm: str,
        method: str,
        cam: str = "gradcampp",
        head_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self._recorder = recorder
        self.relu = tuple(bool(r) for r in relu)
        self.cam_relu = bool(cam_relu)
        w = torch.tensor(list(weights), dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())
        self.statistic = STATISTICS[statistic]
        self.norm = NORMS[norm]
        self.cam_name = cam
        self.closed_form = head_weight is not None
        if head_weight is not None:
            self.register_buffer("head_weight", head_weight.detach().clone().float())
        self.outputs = ALL_OUTPUTS if self.closed_form else SMOE_OUTPUTS
        self.method = method
        pick = {"fastcam": "fused", "smoe": "smoe", "nonclass": "nonclass", "gradcam": "cam",
                "gradcampp": "cam"}
        self._pick = pick[method]
        if self._pick not in self.outputs:
            raise ValueError(f"method {method!r} needs a closed-form CAM; this graph has SMOE maps only")

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        size = (int(x.shape[2]), int(x.shape[3]))
        logits = self.model(x)
        acts = self._recorder.pop()
        out: dict[str, Tensor] = {"logits": logits}
        if self.closed_form:
            a = torch.relu(acts[-1]) if self.cam_relu else acts[-1]
            cam_small = cam_from_linear_head(a, self.head_weight, logits.argmax(dim=1), self.cam_name)
            m = fastcam_maps(acts, self.relu, cam_small, size, self.weights, self.statistic, self.norm,
                             resize=resize_bilinear)
            out.update(scales=m.scales, smoe=m.smoe, cam=m.cam, fused=m.fused, nonclass=m.nonclass)
        else:
            maps = scale_maps(acts, self.relu, self.statistic, self.norm)
            out["smoe"], out["scales"] = combine_maps(maps, size, self.weights, resize_bilinear)
        out["saliency"] = out[self._pick]
        return tuple(out[name] for name in self.outputs)


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


def layer_names(layers: Sequence[LayerInfo]) -> tuple[str, ...]:
    """``NAME`` or ``NAME#CALL`` for each layer, as the engine's results name them."""
    return tuple(i.label for i in layers)
