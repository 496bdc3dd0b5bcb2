"""What the runtime backends share: the graph of a spec over a module, and outputs back to tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.graph import ExplainGraph, GraphOutput
from rtsal.engine.saliency.norm import NORMS
from rtsal.engine.saliency.smoe import NEEDS_RELU, runtime_statistic
from rtsal.engine.spec import FastCAMSpec
from rtsal.types import LayerInfo

__all__ = ["example_inputs", "graph_of", "outputs_of", "quiet_cpp_extension"]


def quiet_cpp_extension() -> None:
    """Silence torch's C++ extension helper's "No CUDA runtime is found, using CUDA_HOME=..." warning, which
    it prints on every CPU-only build (AOTInductor) or import (NNCF) where a CUDA toolkit folder exists: not a
    problem of the run. Errors still show."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def graph_of(spec: FastCAMSpec, model: nn.Module, runtime: str = "torch") -> ExplainGraph:
    """The one graph (:class:`~rtsal.engine.graph.ExplainGraph`) for ``spec`` over ``model`` (a hook-free
    module in eval mode, see :func:`rtsal.engine.graph.clean_copy`). The statistic is the formulation of
    ``spec.statistic`` that ``runtime`` computes fastest
    (:func:`~rtsal.engine.saliency.smoe.runtime_statistic`, measured in docs/graph-cost.md). A gradient
    head is traced for ``spec``'s input shape and decomposed into core aten ops for the converters; for
    ``compiled``, :func:`~rtsal.engine.graph.build_package` traces it with the export instead (on the
    example's device, under the export lock; Inductor takes the backward ops as they are)."""
    layers = [LayerInfo(name, call, relu=relu) for name, call, relu in spec.layers]
    relu = [info.relu and NEEDS_RELU[spec.statistic] for info in layers]
    w = torch.tensor(spec.layer_weights, dtype=torch.float32)
    head_weight = None
    if spec.head == "linear":
        head_weight = dict(model.named_modules())[str(spec.head_layer)].weight.detach()
    stat = runtime_statistic(spec.statistic, runtime)
    graph = ExplainGraph(model, layers, relu, w / w.sum(), head_weight, spec.cam, stat, NORMS[spec.norm],
                         spec.topk, cam_relu=layers[-1].relu).eval()
    if graph.needs_head_grad and runtime != "compiled":
        x, target = example_inputs(spec)
        graph.trace_head(x)
        with torch.no_grad():
            graph.model(x)
        a = graph.recorder.pop()[-1]
        graph.head_grad = _decomposed(graph.head_grad, a, torch.zeros_like(target))
    return graph


def _decomposed(gm: nn.Module, a: Tensor, target: Tensor) -> nn.Module:
    """The traced head gradient with its backward ops (``hardswish_backward``, ...) decomposed into core
    aten ops, which the ONNX exporter and OpenVINO's converter know."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.no_grad():
        out = make_fx(gm, decomposition_table=core_aten_decompositions())(a, target)
    _plain_views(out.graph)
    out.graph.eliminate_dead_code()
    out.recompile()
    return out


def _plain_views(graph: torch.fx.Graph) -> None:
    """Functionalisation writes a reshape into a fresh tensor as ``as_strided_scatter`` / ``as_strided_copy``
    / ``view_copy`` / ``copy`` over a whole, contiguous buffer, which converters lack (the TorchScript ONNX
    exporter: ``aten::as_strided_copy``, ``aten::view_copy``); these are reshapes and expands."""
    aten = torch.ops.aten

    def val(node: object) -> Tensor | None:
        v = getattr(node, "meta", {}).get("val")
        return v if isinstance(v, Tensor) else None

    def contiguous(size: Sequence[int], stride: Sequence[int]) -> bool:
        # the strides of size-1 dimensions say nothing (a (1, 960, 1, 1) view with strides (960, 1, 960, 960))
        return torch.empty_strided(list(size), list(stride)).is_contiguous()

    for n in list(graph.nodes):
        if n.op != "call_function":
            continue
        new = None
        if n.target == aten.as_strided_copy.default:
            src, size, stride = n.args[:3]
            offset = n.args[3] if len(n.args) > 3 else 0
            v = val(src)
            if v is not None and offset == 0 and contiguous(size, stride) and v.numel() == val(n).numel():
                new = (aten.reshape.default, (src, list(size)))
        elif n.target == aten.as_strided_scatter.default:
            base, src, size, stride = n.args[:4]
            offset = n.args[4] if len(n.args) > 4 else 0
            vb = val(base)
            if vb is not None and offset == 0 and contiguous(size, stride) and vb.is_contiguous() \
                    and vb.numel() == int(torch.tensor(list(size)).prod()):
                new = (aten.reshape.default, (src, list(vb.shape)))
        elif n.target == aten.view_copy.default:
            new = (aten.reshape.default, (n.args[0], list(n.args[1])))
        elif n.target == aten.copy.default:
            dst, src = n.args[:2]
            vd = val(dst)
            if vd is not None:
                new = (aten.expand.default, (src, list(vd.shape)))
        if new is not None:
            with graph.inserting_before(n):
                repl = graph.call_function(*new)
            repl.meta.update(n.meta)
            n.replace_all_uses_with(repl)
            graph.erase_node(n)


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
