"""Small maps -> :class:`~rtsal.types.SaliencyResult`: the one host-side assembler and the one method table.

Every backend's graph returns the logits, the raw CAM at the last scale and the normalised per-scale maps at
their own resolutions (:class:`~rtsal.engine.graph.GraphOutput`). :func:`assemble` does everything after
it, the same for every backend: upsampling, the weighted combination at the output size, the CAM's range
norm, FastCAM and the non-class map (:func:`assemble_maps`: ``saliency.fastcam.fuse_maps``, OpenCV on the
CPU), the top-k and the class names. An exported ONNX file does the same maths inside its graph by calling
:func:`assemble_maps` with a traceable resize (:mod:`rtsal.deploy.graph`). :data:`MAP_OF_METHOD` is the
only place that says which map each engine method returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rtsal.types import SaliencyResult, TopK

if TYPE_CHECKING:  # torch-free at import: the method table is read by torch-free modules
    from torch import Tensor

    from rtsal.engine.saliency.combine import Resize

__all__ = ["MAP_FIELDS", "MAP_OF_METHOD", "assemble", "assemble_maps", "engine_result", "top_k"]

# the field of SaliencyResult that each engine method's ``saliency`` is
MAP_OF_METHOD: Mapping[str, str] = {
    "fastcam": "fused",
    "smoe": "smoe",
    "nonclass": "nonclass",
    "gradcam": "cam",
    "gradcampp": "cam",
}


# the maps the assembler makes, in this order
MAP_FIELDS = ("scales", "smoe", "cam", "fused", "nonclass")


def assemble_maps(
    maps: Sequence[Tensor],
    cam_small: Tensor,
    out_size: tuple[int, ...],
    weights: Tensor,
    resize: Resize | None = None,
) -> dict[str, Tensor]:
    """A graph's small maps -> every map at ``out_size``, by name (:data:`MAP_FIELDS`).

    ``maps``: L normalised per-scale maps (N, h_l, w_l); ``cam_small`` (N, h, w) raw CAM; ``weights`` (L,)
    summing to 1. Returns ``scales`` (N, L, H, W), ``smoe``, ``cam`` (range-normalised), ``fused`` (SMOE x
    CAM) and ``nonclass`` (SMOE x (1 - CAM)), each (N, H, W). ``resize``: the bilinear upsampling (default:
    OpenCV on the CPU; ``saliency.combine.resize_bilinear`` where the step is traced into a graph)."""
    from rtsal.engine.saliency.combine import upsample
    from rtsal.engine.saliency.fastcam import fuse_maps

    fused = fuse_maps(maps, cam_small, out_size, weights, resize or upsample)  # type: ignore[arg-type]
    return dict(zip(MAP_FIELDS, fused, strict=True))


def engine_result(
    method: str, *, fused: Any, smoe: Any, nonclass: Any, cam: Any, **fields: Any
) -> SaliencyResult:
    """A result of the one-pass engine, ``saliency`` being the map :data:`MAP_OF_METHOD` names."""
    maps = {"fused": fused, "smoe": smoe, "nonclass": nonclass, "cam": cam}
    return SaliencyResult(saliency=maps[MAP_OF_METHOD[method]], method=method, **maps, **fields)


def top_k(logits: Tensor, k: int, class_names: Sequence[str]) -> TopK:
    """Softmax probabilities of the ``k`` best classes: (N, classes) -> indices, probs (N, k) and names."""
    import torch

    probs = torch.softmax(logits.detach().float(), dim=1)
    top_p, top_i = probs.topk(k, dim=1)
    return TopK(top_i, top_p, [[class_names[i] for i in row] for row in top_i.tolist()])


def assemble(
    method: str,
    logits: Tensor,
    target: Tensor,
    cam_small: Tensor,
    maps: Sequence[Tensor],
    out_size: tuple[int, int],
    weights: Tensor,
    class_names: Sequence[str],
    topk: int,
    layers: tuple[str, ...],
    timings: dict[str, float] | None = None,
    engine: str = "eager",
) -> SaliencyResult:
    """A graph's outputs -> the result every front end reads.

    ``logits`` (N, classes); ``target`` (N,) the class the CAM explains; ``cam_small`` (N, h, w) raw CAM;
    ``maps``: L normalised per-scale maps (N, h_l, w_l); ``weights`` (L,) summing to 1; every map comes back
    at ``out_size`` (H, W). ``engine`` names the backend that ran the graph.
    """
    import torch

    with torch.inference_mode():
        named = assemble_maps(maps, cam_small, out_size, weights)
        tk = top_k(logits, topk, class_names)
    return engine_result(
        method,
        fused=named["fused"],
        smoe=named["smoe"],
        nonclass=named["nonclass"],
        cam=named["cam"],
        logits=logits.detach(),
        topk=tk,
        target=target,
        scales=named["scales"],
        layers=layers,
        timings=timings if timings is not None else {},
        engine=engine,
    )
