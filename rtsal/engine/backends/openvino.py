"""The OpenVINO backend: the graph converted by ``openvino.convert_model``, compiled for the CPU, cached.

- **Build**: :func:`~rtsal.engine.backends.common.graph_of` over a hook-free copy of the model, traced by
  ``openvino.convert_model`` with example inputs of the spec's shape, compiled by ``Core.compile_model``
  with ``INFERENCE_PRECISION_HINT`` = the spec's precision (``f32`` or ``bf16``) and the latency hint.
- **INT8** (``precision="int8"``, needs ``nncf``): the graph quantised by NNCF post-training quantisation
  (:func:`quantize`), calibrated on the bundled photographs and eval images preprocessed as the Explainer
  does (:func:`calibration_samples`); the statistic, normalisation and CAM, and the first blocks (every node
  the maps at stride <= :data:`INT8_F32_STRIDE` depend on) stay unquantised and run at f32: quantising them
  moved Lite0's early maps to correlation 0.77 and top-1 on one image in 8 (docs/backends.md).
- **Cache**: the compiled model's blob (``CompiledModel.export_model``) is kept in rtsal's cache folder under
  the key of the spec, the OpenVINO version, the CPU's capabilities and the config, with the same rules as
  the compiled engine's packages (:mod:`rtsal.engine.cache`: a 0700 folder, SHA-256 recorded at write and
  verified before loading, atomic writes, one build per key). A warm start imports the blob (no
  conversion, no compile).
- **Streams**: ``streams`` infer requests on one compiled model; each call takes a free one, so the
  pipeline's inference streams run at once (``InferRequest.infer`` releases the GIL).
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.backends.common import example_inputs, graph_of, outputs_of, quiet_cpp_extension
from rtsal.engine.cache import Cache
from rtsal.engine.graph import GraphOutput, clean_copy
from rtsal.engine.saliency.smoe import runtime_statistic
from rtsal.engine.spec import FastCAMSpec
from rtsal.errors import UsageError

__all__ = ["OpenVINOBackend", "calibration_samples", "convert", "ov_config", "quantize", "static"]

SUFFIX = ".ovblob"
PRECISION = {"f32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: what stays unquantised runs at f32
NNCF_MISSING = '--precision int8 needs nncf, which is not installed: pip install "rtsal[openvino]"'
INT8_F32_STRIDE = 8  # int8: the scales at stride <= 8 (Lite0: up to blocks.4, 28 px at 224) and all before
DATA = Path(__file__).resolve().parents[2] / "data"


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
            return static(ov.convert_model(graph, example_input=example_inputs(spec)), spec.shape)
    finally:
        graph.close()


def static(ov_model: Any, shape: Sequence[int] | None) -> Any:
    """``ov_model`` (in place) with static input shapes: ``shape`` (N, 3, h, w), and (N,) for the targets
    of an explanation graph. ``convert_model`` leaves them dynamic; the CPU plugin then ran Lite0's graph
    1.4x (f32) and 1.6x (bf16) slower than the same graph at the one shape it is built for
    (docs/backends.md)."""
    import openvino as ov

    if shape is None:
        return ov_model
    shapes = {0: ov.PartialShape(list(shape))}
    if len(ov_model.inputs) > 1:
        shapes[1] = ov.PartialShape([shape[0]])
    ov_model.reshape(shapes)
    return ov_model


def calibration_samples(
    preprocess: Callable[[np.ndarray], Tensor], shape: tuple[int, ...]
) -> list[np.ndarray]:
    """The INT8 calibration set for inputs of ``shape`` (N, 3, h, w): the bundled photographs and eval images
    (sorted by name: deterministic) preprocessed by ``preprocess`` (RGB uint8 -> (1, 3, h', w')), resized to
    (h, w) if need be, in batches of N (the last one filled from the first images)."""
    import cv2

    paths = sorted(DATA.glob("*.jpg")) + sorted((DATA / "eval").glob("*.jpg"))
    xs = []
    for p in paths:
        x = preprocess(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)).float().cpu()
        if tuple(x.shape[-2:]) != tuple(shape[-2:]):
            x = torch.nn.functional.interpolate(x, size=tuple(shape[-2:]), mode="bilinear",
                                                align_corners=False)
        xs.append(x.contiguous())
    n = shape[0]
    xs += xs[: (-len(xs)) % n]
    return [np.ascontiguousarray(torch.cat(xs[i:i + n]).numpy(), dtype=np.float32)
            for i in range(0, len(xs), n)]


def int8_key(samples: Sequence[np.ndarray]) -> dict[str, Any]:
    """What an INT8 blob depends on beyond the spec: the calibration set, NNCF's version, the f32 rule."""
    import hashlib

    quiet_cpp_extension()  # NNCF's import builds torch's C++ extension helper
    import nncf

    digest = hashlib.sha256()
    for a in samples:
        digest.update(np.ascontiguousarray(a).tobytes())
    return {"calibration": digest.hexdigest(), "nncf": nncf.__version__, "int8_f32_stride": INT8_F32_STRIDE}


def _upstream(outputs: Sequence[Any]) -> set[str]:
    """The friendly names of the nodes ``outputs`` (of an ``openvino.Model``) depend on."""
    seen: set[str] = set()
    stack = [o.get_node() for o in outputs]
    while stack:
        n = stack.pop()
        if n.get_friendly_name() not in seen:
            seen.add(n.get_friendly_name())
            stack.extend(i.get_source_output().get_node() for i in n.inputs())
    return seen


def int8_ignored(ov_model: Any) -> list[str]:
    """The nodes of an explanation graph (outputs: logits, top-p, top-i, target, CAM, maps; static shapes)
    NNCF leaves unquantised: the statistic, normalisation and CAM (the nodes the maps depend on but the
    logits do not), and the first blocks (every node the maps at stride <= :data:`INT8_F32_STRIDE` depend
    on)."""
    outs = list(ov_model.outputs)
    h, w = (int(d) for d in ov_model.inputs[0].get_shape()[-2:])
    ignored = _upstream(outs[4:]) - _upstream(outs[:1])
    sizes = [tuple(int(d) for d in o.get_shape()[-2:]) for o in outs[5:]]
    fine = [i for i, (hl, wl) in enumerate(sizes) if hl * INT8_F32_STRIDE >= h and wl * INT8_F32_STRIDE >= w]
    if fine:
        ignored |= _upstream(outs[5 + max(fine):6 + max(fine)])
    return sorted(n.get_friendly_name() for n in ov_model.get_ordered_ops()
                  if n.get_friendly_name() in ignored and n.get_type_name() not in ("Constant", "Parameter"))


def quantize(ov_model: Any, samples: Sequence[np.ndarray], maps: bool = True) -> Any:
    """``ov_model`` quantised to INT8 by NNCF, calibrated on ``samples`` (all of them, in order); ``maps``:
    it is the explanation graph (two inputs; :func:`int8_ignored` stays unquantised), else a plain model."""
    import logging

    quiet_cpp_extension()  # NNCF's import builds torch's C++ extension helper
    try:
        import nncf
    except ImportError as exc:
        raise UsageError(NNCF_MISSING) from exc
    nncf.set_log_level(logging.WARNING)
    static(ov_model, samples[0].shape)  # the one shape the blob is built for
    if maps:
        data = nncf.Dataset(list(samples), lambda a: (a, np.full((a.shape[0],), -1, dtype=np.int64)))
        scope = nncf.IgnoredScope(names=int8_ignored(ov_model), validate=False)
        kw: dict[str, Any] = {"ignored_scope": scope}
    else:
        data, kw = nncf.Dataset(list(samples)), {}
    with _progress_on_stderr():
        return nncf.quantize(ov_model, data, subset_size=len(samples), **kw)


@contextlib.contextmanager
def _progress_on_stderr() -> Iterator[None]:
    """NNCF draws its progress bars through rich's global console, on standard output, which is the
    command's own (top-5 lines, tables, JSON): on standard error meanwhile. Not ``redirect_stdout``: the
    quantisation runs in a build thread while the command's thread may print."""
    import rich

    console = rich.get_console()
    before = getattr(console, "_file", None)
    console.file = sys.stderr
    try:
        yield
    finally:
        console.file = before  # type: ignore[assignment]  # None: back to the lazy sys.stdout


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
        calibration: Callable[[tuple[int, ...]], list[np.ndarray]] | None = None,
    ) -> None:
        import openvino as ov

        if spec.shape is None:
            raise ValueError("the spec holds no input shape")
        self.spec = spec
        self.config = ov_config(spec.precision, threads, streams)
        self._core = ov.Core()
        self._model = model
        self.cache = Cache(cache_dir, suffix=SUFFIX)
        self._samples: list[np.ndarray] = []
        key = self.cache_spec(spec, self.config, self._core)
        if spec.precision == "int8":
            if calibration is None:
                raise ValueError("precision int8 needs calibration samples (an Explainer passes them)")
            self._samples = calibration(spec.shape)
            key = {**key, **int8_key(self._samples)}
        def make() -> Any:
            graph = convert(spec, model)
            return quantize(graph, self._samples) if self._samples else graph

        self.compiled, self.source = self._compile(key, make)
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
        if self._samples:  # int8: the plain model quantised as a user would, on the same samples
            key = {**key, **int8_key(self._samples)}

        def make() -> Any:
            import warnings

            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                example = example_inputs(self.spec)[:1]
                plain = static(ov.convert_model(clean_copy(self._model).eval(), example_input=example),
                               example[0].shape)
            return quantize(plain, self._samples, maps=False) if self._samples else plain

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
            "shapes": "static",  # blobs of the dynamic-shape graphs were slower: rebuilt
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
