"""The ONNX Runtime backend: the graph exported to ONNX (cached), run by a CPU session.

The ONNX file of a spec's graph is kept in rtsal's cache folder with the same rules as the compiled
engine's packages (:mod:`rtsal.engine.cache`). The session is ONNX Runtime's default CPU session with
``threads`` intra-op threads; ``InferenceSession.run`` may be called from many threads at once.
(``rtsal export`` writes the same graph with the host assembly inside it, :mod:`rtsal.deploy.graph`, for use
without rtsal; ``--backend onnxruntime --onnx FILE`` runs such a file through :mod:`rtsal.deploy.runtime`.)
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rtsal.engine.backends.common import example_inputs, graph_of, outputs_of
from rtsal.engine.cache import Cache
from rtsal.engine.graph import GraphOutput, clean_copy
from rtsal.engine.saliency.smoe import runtime_statistic
from rtsal.engine.spec import FastCAMSpec

__all__ = ["OnnxRuntimeBackend", "onnx_bytes"]

SUFFIX = ".onnx"


def onnx_bytes(spec: FastCAMSpec, model: nn.Module) -> bytes:
    """``spec``'s graph over a copy of ``model`` as ONNX (the TorchScript exporter: it traces on the calling
    thread only, so a serving eager engine is not disturbed)."""
    import warnings

    graph = graph_of(spec, clean_copy(model).eval(), "onnxruntime")
    buf = io.BytesIO()
    try:
        # the exporter prints its whole IR graph (from C++) before raising on an operator it lacks: the
        # caller says the one line that matters
        with warnings.catch_warnings(), torch.no_grad(), _stderr_to_devnull():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example_inputs(spec), buf, dynamo=False, input_names=["x", "target"],
                              opset_version=18)
    finally:
        graph.close()
    return buf.getvalue()


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the duration (C++ writes there, past ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class OnnxRuntimeBackend:
    """``spec``'s graph in an ONNX Runtime CPU session (see the module docstring)."""

    name = "onnxruntime"

    def __init__(
        self,
        spec: FastCAMSpec,
        model: nn.Module,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        streams: int = 1,
    ) -> None:
        if spec.precision != "f32":
            raise ValueError("the onnxruntime backend runs f32 only")
        self.spec = spec
        self.threads = threads
        self._model = model
        self.cache = Cache(cache_dir, suffix=SUFFIX)
        self._key = {"backend": "onnxruntime", "model": spec.model, "shape": list(spec.shape or ()),
                     "method": spec.method, "spec": spec.to_dict(), "torch": torch.__version__,
                     "statistic": runtime_statistic(spec.statistic, "onnxruntime").__name__}
        self._session, self.source = self._open(self._key, lambda: onnx_bytes(spec, model))

    def _open(self, key: dict[str, Any], make: Any) -> tuple[Any, str]:
        import onnxruntime as ort

        source, path = "cache", self.cache.lookup(key)
        if path is None:
            path, source = self.cache.store(key, lambda tmp: Path(tmp).write_bytes(make())), "built"
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        opts.log_severity_level = 3
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), source

    def plain(self) -> Any:
        """The plain model (logits only) in a session with the same settings, cached: a callable
        ``x -> None``, the baseline of the maps' cost on this runtime."""
        def make() -> bytes:
            import warnings

            buf = io.BytesIO()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(clean_copy(self._model).eval(), example_inputs(self.spec)[:1], buf,
                                  dynamo=False, input_names=["x"], opset_version=18)
            return buf.getvalue()

        session, _ = self._open({**self._key, "plain": True, "method": "plain"}, make)
        return lambda x: session.run(None, {"x": x.detach().cpu().contiguous().numpy()})

    def run(self, x: Tensor, target: Tensor) -> GraphOutput:
        session = self._session
        if session is None:
            raise RuntimeError("this ONNX Runtime backend is closed")
        feed = {"x": x.detach().cpu().contiguous().numpy(), "target": target.detach().cpu().numpy()}
        return outputs_of(session.run(None, feed))

    def close(self) -> None:
        self._session = None
