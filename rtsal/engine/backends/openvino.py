"""The OpenVINO backend: the graph converted by ``openvino.convert_model``, compiled for the CPU, cached.

- **Build**: :func:`~rtsal.engine.backends.common.graph_of` over a hook-free copy of the model, traced by
  ``openvino.convert_model`` with example inputs of the spec's shape, compiled by ``Core.compile_model``
  with ``INFERENCE_PRECISION_HINT`` = the spec's precision (``f32`` or ``bf16``) and the latency hint.
- **Cache**: the compiled model's blob (``CompiledModel.export_model``) is kept in rtsal's cache folder under
  the key of the spec, the OpenVINO version, the CPU's capabilities and the config, with the same rules as
  the compiled engine's packages (:mod:`rtsal.engine.cache`: a 0700 folder, SHA-256 recorded at write and
  verified before loading, atomic writes, one build per key). A warm start imports the blob (no
  conversion, no compile).
- **Streams**: ``streams`` infer requests on one compiled model; each call takes a free one, so the
  pipeline's inference streams run at once (``InferRequest.infer`` releases the GIL).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.backends.common import example_inputs, graph_of, outputs_of
from rtsal.engine.cache import Cache
from rtsal.engine.graph import GraphOutput, clean_copy
from rtsal.engine.saliency.smoe import runtime_statistic
from rtsal.engine.spec import FastCAMSpec

__all__ = ["OpenVINOBackend", "convert", "ov_config"]

SUFFIX = ".ovblob"
PRECISION = {"f32": "f32", "bf16": "bf16"}


def ov_config(precision: str, threads: int | None, streams: int = 1) -> dict[str, Any]:
    """The compile settings: the precision hint, the latency hint, ``streams`` CPU streams of ``threads``
    threads each (default: OpenVINO's choice)."""
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads) * max(1, streams)
    if streams > 1:
        cfg["NUM_STREAMS"] = int(streams)
    return cfg


def convert(spec: FastCAMSpec, model: nn.Module) -> Any:
    """``spec``'s graph over ``model`` as an ``openvino.Model`` (the model is copied; its hooks stay)."""
    import warnings

    import openvino as ov

    graph = graph_of(spec, clean_copy(model).eval(), "openvino")
    try:
        # the tracer warns about every Python number the model computes from shapes (fixed here: one graph
        # per input shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ov.convert_model(graph, example_input=example_inputs(spec))
    finally:
        graph.close()


class OpenVINOBackend:
    """``spec``'s graph compiled by OpenVINO for the CPU (see the module docstring)."""

    name = "openvino"

    def __init__(
        self,
        spec: FastCAMSpec,
        model: nn.Module,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        streams: int = 1,
    ) -> None:
        import openvino as ov

        if spec.shape is None:
            raise ValueError("the spec holds no input shape")
        self.spec = spec
        self.config = ov_config(spec.precision, threads, streams)
        self._core = ov.Core()
        self._model = model
        self.cache = Cache(cache_dir, suffix=SUFFIX)
        self.compiled, self.source = self._compile(self.cache_spec(spec, self.config, self._core),
                                                   lambda: convert(spec, model))
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(max(1, streams)):
            self._requests.put(self.compiled.create_infer_request())
        self._closed = threading.Event()

    def _compile(self, key: Mapping[str, Any], make: Any) -> tuple[Any, str]:
        """The compiled model of cache entry ``key`` (``make()`` gives the ``openvino.Model`` to compile
        when it is missing) and where it came from: ``cache`` or ``built``."""
        core, source = self._core, "cache"
        blob = self.cache.lookup(key)
        if blob is None:
            def write(tmp: Path) -> None:
                stream = core.compile_model(make(), "CPU", self.config).export_model()
                tmp.write_bytes(stream if isinstance(stream, bytes) else stream.getvalue())

            blob, source = self.cache.store(key, write), "built"
        return core.import_model(Path(blob).read_bytes(), "CPU", self.config), source

    def plain(self) -> Any:
        """The plain model (logits only) compiled by OpenVINO with the same settings, cached: a callable
        ``x -> None``, the baseline of the maps' cost on this runtime (the HUD, the benchmarks)."""
        import openvino as ov

        key = {**self.cache_spec(self.spec, self.config, self._core), "plain": True, "method": "plain"}

        def make() -> Any:
            import warnings

            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                example = example_inputs(self.spec)[:1]
                return ov.convert_model(clean_copy(self._model).eval(), example_input=example)

        compiled, _ = self._compile(key, make)
        request = compiled.create_infer_request()
        return lambda x: request.infer([np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)])

    @staticmethod
    def cache_spec(spec: FastCAMSpec, config: Mapping[str, Any], core: Any) -> dict[str, Any]:
        """Everything the blob depends on: the cache's key and record."""
        import openvino as ov

        return {
            "backend": "openvino",
            "model": spec.model,
            "shape": list(spec.shape or ()),
            "method": spec.method,
            "spec": spec.to_dict(),
            "statistic": runtime_statistic(spec.statistic, "openvino").__name__,
            "openvino": ov.get_version(),
            "cpu": [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")],
            "config": {k: str(v) for k, v in config.items()},
        }

    def run(self, x: Tensor, target: Tensor) -> GraphOutput:
        """One inference on a free infer request; the GIL is released meanwhile."""
        if self._closed.is_set():
            raise RuntimeError("this OpenVINO backend is closed")
        inputs = [np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32),
                  np.ascontiguousarray(target.detach().cpu().numpy(), dtype=np.int64)]
        request = self._requests.get()
        try:
            request.infer(inputs)
            arrays = [request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]
        finally:
            self._requests.put(request)
        return outputs_of(arrays)

    def close(self) -> None:
        self._closed.set()
