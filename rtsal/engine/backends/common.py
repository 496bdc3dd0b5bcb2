"""What the runtime backends share: the graph of a spec over a module, and outputs back to tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.graph import ExplainGraph, GraphOutput
from rtsal.engine.saliency.norm import NORMS
from rtsal.engine.saliency.smoe import NEEDS_RELU, STATISTICS
from rtsal.engine.spec import FastCAMSpec
from rtsal.types import LayerInfo

__all__ = ["example_inputs", "graph_of", "outputs_of"]


def graph_of(spec: FastCAMSpec, model: nn.Module) -> ExplainGraph:
    """The one graph (:class:`~rtsal.engine.graph.ExplainGraph`) for ``spec`` over ``model`` (a hook-free
    module in eval mode, see :func:`rtsal.engine.graph.clean_copy`). The statistic is called by its name
    in :data:`~rtsal.engine.saliency.smoe.STATISTICS`. A gradient head is traced for ``spec``'s input
    shape."""
    layers = [LayerInfo(name, call, relu=relu) for name, call, relu in spec.layers]
    relu = [info.relu and NEEDS_RELU[spec.statistic] for info in layers]
    w = torch.tensor(spec.layer_weights, dtype=torch.float32)
    head_weight = None
    if spec.head == "linear":
        head_weight = dict(model.named_modules())[str(spec.head_layer)].weight.detach()
    graph = ExplainGraph(model, layers, relu, w / w.sum(), head_weight, spec.cam, STATISTICS[spec.statistic],
                         NORMS[spec.norm], spec.topk, cam_relu=layers[-1].relu).eval()
    if graph.needs_head_grad:
        graph.trace_head(example_inputs(spec)[0])
    return graph


def example_inputs(spec: FastCAMSpec) -> tuple[Tensor, Tensor]:
    """Inputs shaped as ``spec``'s graph takes them: (N, 3, h, w) float32 and (N,) long targets (-1)."""
    shape = spec.shape
    if shape is None:
        raise ValueError("the spec holds no input shape: use spec.for_input(shape)")
    torch.manual_seed(0)
    return torch.randn(shape), torch.full((shape[0],), -1, dtype=torch.long)


def outputs_of(arrays: Sequence[np.ndarray]) -> GraphOutput:
    """A runtime's outputs, in the graph's order, as :class:`GraphOutput`."""
    out = [torch.from_numpy(np.asarray(a)) for a in arrays]
    return GraphOutput(*out[:5], tuple(out[5:]))
