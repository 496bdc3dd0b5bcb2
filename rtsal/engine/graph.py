"""The whole explanation as one graph: forward pass + every map, ready for ``torch.export`` and AOTInductor.

:class:`ExplainGraph` wraps a copy of the classifier whose scale-end outputs are recorded by its own
:class:`~rtsal.engine.hooks.ActivationRecorder` (hooks run as plain Python while ``torch.export`` traces, so
they end up inside the graph). Its forward returns logits, top-k probabilities and indices, the explained
class, the raw CAM and the normalised per-scale maps, each at its own resolution; the engine then upsamples,
combines and fuses them to the output size (``saliency.fastcam.fuse_maps``, OpenCV on the CPU), as the eager
engine does: measured, that resampling inside the graph cost more than the whole eager saliency step. Only
the closed-form CAM (global-average-pool -> linear head) is in the graph; a head that needs autograd is left
to the eager engine.

:func:`build_package` exports one such graph for one input shape and compiles it with AOTInductor into a
``.pt2`` package; :func:`load_package` loads it back as a callable ``(x, target) -> GraphOutput``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rtsal.engine.hooks import ActivationRecorder
from rtsal.engine.saliency.cam import cam_from_linear_head
from rtsal.engine.saliency.fastcam import scale_maps
from rtsal.types import LayerInfo

__all__ = ["ExplainGraph", "GraphOutput", "build_package", "clean_copy", "load_package"]


class GraphOutput(NamedTuple):
    """What the graph returns for a batch of N images: the model's outputs and the per-scale maps at their own
    resolutions. Upsampling, combination and fusion to the output size run after the graph, as in the eager
    engine (OpenCV on the CPU: cheaper than the same resampling inside the compiled graph, measured)."""

    logits: Tensor  # (N, classes)
    top_p: Tensor  # (N, k) softmax probabilities, descending
    top_i: Tensor  # (N, k) class indices
    target: Tensor  # (N,) the class the CAM explains
    cam_small: Tensor  # (N, h, w) raw CAM at the last scale
    maps: tuple[Tensor, ...]  # L normalised per-scale maps (N, h_l, w_l)


class ExplainGraph(nn.Module):
    """``forward(x, target)``: the model and every FastCAM map in one traceable function.

    Args:
        model: the classifier (a hook-free copy: see :func:`clean_copy`); this module registers its own hooks.
        layers: the scale-end layers; ``relu[l]`` applies ReLU to layer l first.
        weights: (L,) scale weights summing to 1.
        head_weight: (classes, C) weight of the linear head after global average pooling.
        cam: ``gradcam`` or ``gradcampp``; statistic and norm: pure functions as in
            :mod:`rtsal.engine.saliency`.
        out_size: (H, W) the maps are used at (part of the cache key; the graph returns them at their own
            resolutions and the engine upsamples them after the call).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[LayerInfo],
        relu: Sequence[bool],
        weights: Tensor,
        head_weight: Tensor,
        cam: str,
        statistic: Callable[[Tensor], Tensor],
        norm: Callable[[Tensor], Tensor],
        topk: int,
        cam_relu: bool,
        out_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.relu = tuple(relu)
        self.register_buffer("weights", weights.detach().clone(), persistent=False)
        self.register_buffer("head_weight", head_weight.detach().clone(), persistent=False)
        self.cam = cam
        self.statistic = statistic
        self.norm = norm
        self.topk = topk
        self.cam_relu = cam_relu
        self.out_size = out_size
        self.recorder = ActivationRecorder(model, layers)
        self.recorder.__enter__()

    def close(self) -> None:
        """Remove this graph's hooks from its model."""
        self.recorder.close()

    def forward(self, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """``x`` (N, 3, h, w) preprocessed; ``target`` (N,) long, a negative entry means "the top-1 class".
        Returns the fields of :class:`GraphOutput` as a plain tuple (what the exporter serialises)."""
        logits = self.model(x)
        acts = self.recorder.pop()
        tgt = torch.where(target < 0, logits.argmax(dim=1), target)
        last = torch.relu(acts[-1]) if self.cam_relu else acts[-1]
        cam_small = cam_from_linear_head(last, self.head_weight, tgt, self.cam)
        maps = scale_maps(acts, self.relu, self.statistic, self.norm)
        probs = torch.softmax(logits.float(), dim=1)
        top_p, top_i = probs.topk(self.topk, dim=1)
        return (logits, top_p, top_i, tgt, cam_small, *maps)


def clean_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without the hooks of any :class:`ActivationRecorder` (the serving engine's, or
    another explainer's on the same module), so a build never touches a serving recorder. Other hooks of the
    model are kept: they are part of what it computes."""
    dup = copy.deepcopy(model)
    for m in dup.modules():
        for store in (m._forward_hooks, m._forward_pre_hooks):
            for i in [k for k, fn in store.items() if _is_recorder_hook(fn)]:
                del store[i]
    return dup


def _is_recorder_hook(fn: object) -> bool:
    return getattr(fn, "__qualname__", "").startswith(f"{ActivationRecorder.__qualname__}.")


def build_package(
    graph: ExplainGraph,
    example: Tensor,
    path: Path,
    freezing: bool = True,
    export_lock: AbstractContextManager | None = None,
) -> Path:
    """Export ``graph`` for inputs shaped like ``example`` and compile it with AOTInductor into ``path``
    (a ``.pt2`` file, weights included). Raises whatever the exporter or the C++ compiler raises.

    ``export_lock`` is held while ``torch.export`` traces (it patches module calls process-wide, so no other
    thread may run a model meanwhile); the longer C++ compile runs without it."""
    target = torch.full((example.shape[0],), -1, dtype=torch.long, device=example.device)
    graph.eval()
    with export_lock or contextlib.nullcontext(), torch.inference_mode():
        ep = torch.export.export(graph, (example, target), strict=False)
    from torch._inductor import aoti_compile_and_package

    out = aoti_compile_and_package(
        ep, package_path=str(path), inductor_configs={"freezing": freezing}
    )
    return Path(out)


def load_package(path: Path) -> Callable[[Tensor, Tensor], GraphOutput]:
    """Load a package written by :func:`build_package`: a callable ``(x, target) -> GraphOutput``.

    The package's C++ loader is used directly: ``torch._inductor.aoti_load_package`` wraps the same loader
    but importing ``torch._inductor`` costs seconds of start-up (it imports ``torch._dynamo``); the graph's
    inputs and outputs are flat tensors already."""
    loader_cls = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_cls is None:  # a torch without the C++ loader binding: the public, slower-to-import path
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(str(path))

        def call(x: Tensor, target: Tensor) -> list[Tensor]:
            return list(runner(x, target))
    else:
        loader = loader_cls(str(path), "model", False, 1, -1)

        def call(x: Tensor, target: Tensor) -> list[Tensor]:
            return loader.boxed_run([x, target])

    def run(x: Tensor, target: Tensor) -> GraphOutput:
        out = call(x, target)
        return GraphOutput(*out[:5], tuple(out[5:]))

    return run
