"""``OrtExplainer``: run an rtsal ONNX export with ONNX Runtime behind the Explainer's interface.

``explain(images, target=None) -> SaliencyResult`` with the same preprocessing, top-k labels and maps
upsampled to the images' size as :class:`rtsal.engine.explainer.Explainer`, so the commands' views, HUD and
CSV work unchanged. The file (:mod:`rtsal.deploy.onnx`) computes the maps at model resolution and explains
the top-1 class; its :class:`~rtsal.engine.spec.FastCAMSpec` (metadata ``rtsal.spec``) says what it
computes, and :data:`~rtsal.engine.result.MAP_OF_METHOD` which map each method returns.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rtsal.deploy.onnx import META_PREFIX, require_onnx
from rtsal.engine.preprocess import Preprocess, as_image_batch
from rtsal.engine.result import MAP_OF_METHOD as _MAP_OF_METHOD
from rtsal.engine.saliency.combine import upsample
from rtsal.engine.spec import FastCAMSpec
from rtsal.errors import ModelError, UsageError
from rtsal.types import SaliencyResult, TopK

__all__ = ["OrtExplainer", "read_metadata"]



def read_metadata(session: Any) -> dict[str, Any]:
    """The ``rtsal.*`` metadata of an ONNX Runtime session, JSON-decoded: spec, settings, class_names, mean,
    std, layers. Raises ModelError for a file rtsal did not write."""
    props = session.get_modelmeta().custom_metadata_map
    try:
        return {k.removeprefix(META_PREFIX): json.loads(v)
                for k, v in props.items() if k.startswith(META_PREFIX)}
    except json.JSONDecodeError:
        raise ModelError("the rtsal metadata of this ONNX file is corrupt") from None


class OrtExplainer:
    """An rtsal ONNX export run by ONNX Runtime on the CPU; a context manager like the Explainer.

    Args:
        path: the ``.onnx`` file written by ``rtsal export``.
        method: which map ``saliency`` is (``fastcam``, ``smoe``, ``nonclass``, ``gradcam``, ``gradcampp``);
            default the one the file was exported with. The file must hold that map.
        threads: ONNX Runtime intra-op threads; default torch's current setting (what ``--threads`` or the
            torch engine would use), one inter-op thread, sequential execution.
        topk: how many classes ``result.topk`` holds.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        method: str | None = None,
        threads: int | None = None,
        topk: int = 5,
    ) -> None:
        require_onnx(runtime_only=True)
        if not os.path.isfile(path):
            raise ModelError(f"ONNX file not found: {path}")
        self._session = self.session(path, threads)
        meta = read_metadata(self._session)
        if "settings" not in meta:
            raise ModelError(f"{path} is not an rtsal export (no rtsal metadata): use `rtsal export`")
        if "spec" not in meta:
            raise ModelError(f"{path} was exported by an older rtsal (no FastCAMSpec): export it again")
        try:
            self.spec = FastCAMSpec.from_json(meta["spec"])
        except ValueError as exc:
            raise ModelError(f"the rtsal metadata of {path} is not a FastCAMSpec: {exc}") from None
        if self.spec.size is None:
            raise ModelError(f"the FastCAMSpec of {path} holds no input size")
        self.path = os.fspath(path)
        self.settings: dict[str, Any] = meta["settings"]
        self.class_names: tuple[str, ...] = tuple(meta["class_names"])
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.layer_names: tuple[str, ...] = tuple(meta["layers"])
        self.name = self.spec.model
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        self.method = method or self.spec.method
        if self.method not in _MAP_OF_METHOD:
            raise UsageError(f"method {self.method!r} is not in an ONNX export: use one of "
                             f"{', '.join(m for m, o in _MAP_OF_METHOD.items() if o in self.outputs)}")
        if _MAP_OF_METHOD[self.method] not in self.outputs:
            raise UsageError(f"{os.path.basename(self.path)} has SMOE maps only (its model's CAM needs the "
                             f"head gradient): use --method smoe")
        self.closed_form = "cam" in self.outputs
        self.topk = max(1, min(int(topk), len(self.class_names)))
        self.size = (int(self.spec.size[0]), int(self.spec.size[1]))
        self.uint8 = self.settings.get("input") == "uint8"
        self.frame_size = tuple(self.settings["frame_size"]) if self.uint8 else self.size
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self._fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self._preprocess = Preprocess(self.mean, self.std, self.size, "cpu", False)
        self._frames = Preprocess((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), self.frame_size, "cpu", False)
        self.device = torch.device("cpu")
        self.closed = False

    @staticmethod
    def session(path: str | os.PathLike, threads: int | None = None) -> Any:
        """An ONNX Runtime CPU session with the engine's thread choice: ``threads`` intra-op threads (default
        torch's current setting), one inter-op thread, sequential execution, all graph optimisations."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a file that is not a model
            text = str(exc).strip().splitlines()
            first = (text[0] if text else type(exc).__name__)[:160]
            raise ModelError(f"cannot load {path} with onnxruntime: {first}") from None

    # -- lifetime -----------------------------------------------------------------------------------------
    def __enter__(self) -> OrtExplainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the session. The explainer cannot be used afterwards."""
        self.closed = True
        self._session = None

    @property
    def cost(self) -> str:
        return "forward only"

    @property
    def passes(self) -> str:
        return "1 fwd (onnxruntime)"

    def preprocess(self, images: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        """RGB uint8 (H, W, 3) or (N, H, W, 3) -> what the graph takes: the normalised (N, 3, h, w) float32
        batch, or for a ``--uint8-input`` export the frames resized to its frame size (N, FH, FW, 3) uint8."""
        if not self.uint8:
            return self._preprocess(images)
        batch = as_image_batch(images)
        if tuple(batch.shape[1:3]) != self.frame_size:
            # the identity normalisation of _frames keeps 0..255: round back to uint8
            x = self._frames(batch).round().clamp(0, 255).to(torch.uint8)
            return x.permute(0, 2, 3, 1).contiguous()
        return torch.from_numpy(np.ascontiguousarray(batch))

    # -- running ------------------------------------------------------------------------------------------
    def explain(
        self,
        images: np.ndarray | Tensor | Sequence[np.ndarray],
        target: int | Sequence[int] | Tensor | None = None,
        *,
        size: tuple[int, int] | str | None = None,
        method: str | None = None,
    ) -> SaliencyResult:
        """Explain a batch: RGB uint8 (H, W, 3) / (N, H, W, 3), or what :meth:`preprocess` returns.

        ``size`` is where the maps come back, as for the Explainer: ``None`` at the input images' (H, W)
        (the model's for a preprocessed float batch), ``"model"`` at the model input's (h, w), or an
        explicit ``(H, W)``. ``method`` selects ``saliency`` for this call (default: :attr:`method`).
        ``target`` must be None: the exported graph explains the top-1 class.
        """
        if self.closed:
            raise RuntimeError("this OrtExplainer is closed")
        if target is not None:
            raise UsageError("an ONNX export explains the top-1 class: --target needs the torch backend")
        method = method or self.method
        if _MAP_OF_METHOD.get(method) not in self.outputs:
            raise UsageError(f"{os.path.basename(self.path)} holds no {method!r} map: use one of "
                             f"{', '.join(m for m, o in _MAP_OF_METHOD.items() if o in self.outputs)}")
        t0 = time.perf_counter()
        if isinstance(images, Tensor) and images.is_floating_point():
            if self.uint8:
                raise UsageError("this export takes uint8 frames (--uint8-input), not a float batch")
            if images.dim() != 4 or tuple(images.shape[1:]) != (3, *self.size):
                raise UsageError(f"a preprocessed batch must be (N, 3, {self.size[0]}, {self.size[1]}), "
                                 f"got {tuple(images.shape)}")
            x = images.detach().cpu().contiguous()
            out_size = self.size
        elif isinstance(images, Tensor) and images.dtype == torch.uint8 and images.dim() == 4 and self.uint8 \
                and tuple(images.shape[1:3]) == self.frame_size:
            x, out_size = images.contiguous(), self.frame_size
        else:
            batch = as_image_batch(images)
            out_size = (int(batch.shape[1]), int(batch.shape[2]))
            x = self.preprocess(batch)
        t1 = time.perf_counter()
        outs = self._run(x.numpy())
        t2 = time.perf_counter()
        maps = {k: torch.from_numpy(v) for k, v in outs.items()}
        logits = maps.pop("logits")
        maps.pop("saliency")
        if size == "model":
            out_size = self.size
        elif size is not None:
            out_size = (int(size[0]), int(size[1]))
        maps = {k: upsample(v, out_size) for k, v in maps.items()}
        probs = torch.softmax(logits.float(), dim=1)
        top_p, top_i = probs.topk(self.topk, dim=1)
        labels = [[self.class_names[i] for i in row] for row in top_i.tolist()]
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "forward": (t2 - t1) * 1e3, "saliency": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return SaliencyResult(
            logits=logits,
            topk=TopK(top_i, top_p, labels),
            target=logits.argmax(dim=1),
            saliency=maps[_MAP_OF_METHOD[method]],
            method=method,
            scales=maps["scales"],
            smoe=maps["smoe"],
            cam=maps.get("cam"),
            fused=maps.get("fused"),
            nonclass=maps.get("nonclass"),
            layers=self.layer_names,
            timings=timings,
        )

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One session run (or one per image for a graph exported with a fixed batch of 1)."""
        if self._fixed_batch is None or x.shape[0] == self._fixed_batch:
            return dict(zip(self.outputs, self._session.run(None, {self._input: x}), strict=True))
        parts = [self._run(x[i:i + 1]) for i in range(x.shape[0])]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.outputs}
