"""The engine: one forward pass gives logits, per-scale SMOE maps, a CAM from the head, and their fusion."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.hooks import ActivationRecorder
from rtsal.engine.kinds import clip_input, grid_fn, make_preprocess, probe_model, resolve_kind
from rtsal.engine.probe import Probe
from rtsal.engine.result import assemble
from rtsal.engine.saliency import combine as comb
from rtsal.engine.saliency.cam import CAMS, cam_from_linear_head
from rtsal.engine.saliency.fastcam import scale_maps
from rtsal.engine.saliency.norm import NORMS
from rtsal.engine.saliency.smoe import NEEDS_RELU, STATISTICS
from rtsal.engine.spec import FastCAMSpec, weights_hash
from rtsal.errors import UsageError
from rtsal.models import LoadedModel, imagenet_classes, load_model
from rtsal.names import ENGINE_METHODS
from rtsal.types import SaliencyResult

if TYPE_CHECKING:
    from rtsal.engine.graph import GraphOutput

METHODS = ENGINE_METHODS


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Explainer:
    """Owns a classifier and its hooks; :meth:`explain` runs one forward pass and returns every map.

    Use as a context manager (hooks are removed on exit, also on error) or call :meth:`close`.

    Args:
        model: a registered name (see ``rtsal.models.MODELS``), a torchvision classifier's name,
            ``timm:NAME``, ``hf:ID_OR_DIR``, ``module.path:factory``, or an ``nn.Module`` classifier.
        weights: ``"default"`` (pretrained), a path to a state dict, or ``None`` (random init).
        method: ``fastcam`` (SMOE x CAM), ``smoe``, ``nonclass``, ``gradcam`` or ``gradcampp``.
        cam: the CAM that FastCAM fuses with: ``gradcampp`` or ``gradcam``.
        norm: per-scale normalisation: ``gauss``, ``gamma`` or ``range``.
        layer_weights: ``equal``, ``linear``, ``prior`` or one number per scale-end layer.
        statistic: per-location channel statistic: ``smoe``, ``mean``, ``std``, ``max`` or ``entropy``.
        layers: explicit scale-end layer names (``NAME`` or ``NAME#CALL``); found by a probe otherwise.
        size: model input size: short side (int) or (height, width); default the model's (224 for image
            models, 112 for the Kinetics r3d_18 family, 224 x 224 for ViT).
        channels_last: run the model in channels-last memory format (faster convolutions and channel
            reductions on CPU).
        head_autograd: force the autograd-through-the-head CAM even when a closed form exists.
        compile: run the compiled backend (forward pass and every map as one AOTInductor graph per input
            shape, cached on disk; see ``rtsal.engine.backends.compiled``). ``True`` builds or loads it on
            the first call for a shape; ``"background"`` serves eagerly until it is ready. Falls back to the
            eager engine, with one line on stderr, when it cannot be compiled. ``result.engine`` says which
            ran.
        cache_dir: the compiled-graph cache folder (default ``$RTSAL_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/rtsal``).
        backend: which runtime runs the graph (see :mod:`rtsal.engine.backends`): ``torch`` (eager),
            ``compiled`` (AOTInductor), ``onnxruntime``, ``openvino``, or ``auto`` (the fastest installed
            for an image CNN). Default: ``compiled`` when ``compile`` is set, else ``torch``. A graph
            backend is built per input shape, before the first call (``compile=True``, the default for
            them) or in the background (``compile="background"``: eager until it is ready).
            ``result.engine`` names the backend that drew each result.
        precision: ``f32`` (default), ``bf16``: OpenVINO's inference precision, or, with the compiled
            backend on the CPU, the trunk under bf16 autocast with its first blocks and every map in f32
            (:mod:`rtsal.engine.precision`); ``int8`` (openvino, needs ``nncf``): the trunk after the first
            blocks quantised by NNCF on the bundled images. See docs/backends.md for how far the maps agree
            with f32.
        threads: the graph runtime's threads per call (default: torch's thread setting).
        streams: how many calls may run at once (the pipeline's inference streams; default 1).

    Examples:
        >>> with Explainer("efficientnet-lite0", backend="openvino") as ex:  # doctest: +SKIP
        ...     result = ex.explain(image)  # RGB uint8 (H, W, 3)
        ...     result.engine, result.topk.labels[0][0], result.fused.shape
    """

    def __init__(
        self,
        model: str | nn.Module = "efficientnet-lite0",
        weights: str | os.PathLike | None = "default",
        method: str = "fastcam",
        cam: str = "gradcampp",
        norm: str = "gauss",
        layer_weights: str | Sequence[float] = "equal",
        statistic: str = "smoe",
        layers: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        size: int | tuple[int, int] | None = None,
        topk: int = 5,
        channels_last: bool = True,
        head_autograd: bool = False,
        compile: bool | str = False,
        cache_dir: str | os.PathLike | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        backend: str | None = None,
        precision: str = "f32",
        threads: int | None = None,
        streams: int = 1,
    ) -> None:
        from rtsal.engine.backends import resolve
        from rtsal.engine.spec import PRECISIONS

        _choose("method", method, METHODS)
        _choose("precision", precision, PRECISIONS)
        _choose("cam", cam, tuple(CAMS))
        _choose("norm", norm, tuple(NORMS))
        _choose("statistic", statistic, tuple(STATISTICS))
        if topk < 1:
            raise UsageError(f"topk must be at least 1, got {topk}")
        self.device = torch.device(device)
        loaded: LoadedModel = load_model(model, weights, mean=mean, std=std, class_names=class_names)
        self.name = loaded.name
        self._module = loaded.module.to(self.device)
        # clips (rtsal/engine/clips.py) and transformers (rtsal/engine/tokens.py) branch on the model kind
        self.kind, self.clip_len, self.min_frames = loaded.kind, loaded.clip_len, loaded.min_frames or 1
        size = size if size is not None else loaded.size or 224
        self.info: Probe = probe_model(
            self._module, self.kind, layers if layers is not None else loaded.layers, size, self.min_frames,
            loaded.candidates,
        )
        self.kind = resolve_kind(self.kind, self.info)  # "auto": image or tokens, as the probe found
        size = self.info.input_size or size  # a model that takes one size runs at it
        self.channels_last = channels_last and self.kind == "image"
        if self.channels_last:
            self._module = self._module.to(memory_format=torch.channels_last)
        self.to_grid = grid_fn(self.kind, self.info)  # token outputs -> (N, C, h, w) grids; None: grids
        self.layers = self.info.layers
        n_cls = self.info.num_classes
        if loaded.class_names:
            if len(loaded.class_names) != n_cls:
                raise UsageError(f"{len(loaded.class_names)} class names for a model with {n_cls} classes")
            self.class_names = loaded.class_names
        else:
            self.class_names = (
                imagenet_classes() if n_cls == 1000 else tuple(f"class_{i}" for i in range(n_cls))
            )
        self.method = method
        self.fused_cam = cam  # the CAM that fastcam and nonclass fuse with
        self.cam_name = method if method in ("gradcam", "gradcampp") else cam
        self.norm_name = norm
        self.statistic = statistic
        self.weights = comb.layer_weights(layer_weights, len(self.layers))
        self.topk = min(topk, n_cls)
        self.mean, self.std = loaded.mean, loaded.std
        self._preprocess = make_preprocess(
            self.kind, loaded.mean, loaded.std, size, self.device, self.channels_last, self.min_frames,
            loaded.interpolation,
        )
        self.compile = compile
        stat = STATISTICS[statistic]
        self._relu = tuple(info.relu and NEEDS_RELU[statistic] for info in self.layers)
        w = torch.tensor(self.weights, dtype=torch.float32, device=self.device)
        self._weights_t = w / w.sum()
        self._maps = partial(scale_maps, statistic=stat, norm=NORMS[norm])  # (N, h_l, w_l) per scale
        self.closed_form = self.info.linear_head is not None and not head_autograd
        if self.closed_form:
            head = dict(self._module.named_modules())[self.info.linear_head]
            self._head_weight = head.weight.detach()
        self._recorder = ActivationRecorder(self._module, self.layers, grad_layer=len(self.layers) - 1)
        self._recorder.track_grad = not self.closed_form
        self._recorder.__enter__()
        self._compiled = None
        self.precision = precision
        if backend is None:
            backend = "compiled" if compile else "torch"
        if backend == "auto" and precision == "int8" and self.kind == "image":
            backend = "openvino"  # the one backend that offers it
        backend = resolve(backend, image_model=self.kind == "image")
        if backend != "torch" and self.kind != "image":  # the graph knows (N, C, h, w) CNN activations only
            import sys

            print(f"rtsal: the {backend} backend takes image CNNs; {self.name} ({self.kind}) runs eager",
                  file=sys.stderr)
            backend, compile = "torch", False
        offered = ("openvino",) if precision == "int8" else ("openvino", "compiled")
        if precision != "f32" and backend not in offered:
            raise UsageError(f"--precision {precision} is offered by the {' and '.join(offered)} backend"
                             f"{'s' if len(offered) > 1 else ''} only (this run: {backend})")
        if precision == "int8":
            import importlib.util

            from rtsal.engine.backends.openvino import NNCF_MISSING

            if importlib.util.find_spec("nncf") is None:
                raise UsageError(NNCF_MISSING)
        if precision != "f32" and backend == "compiled" and self.device.type != "cpu":
            raise UsageError(f"--precision {precision} with the compiled backend runs on the CPU only "
                             f"(this run: {self.device})")
        self.backend = backend
        if backend != "torch":
            from rtsal.engine.backends.served import ServedBackend

            options: dict[str, object] = {}
            if backend == "compiled":
                from rtsal.engine.backends.compiled import rebuild_args

                options = {"device": str(self.device), "rebuild": rebuild_args(model, weights)}
            calibration = None
            if precision == "int8":  # NNCF calibrates on the bundled images, preprocessed as here
                from rtsal.engine.backends.openvino import calibration_samples

                calibration = partial(calibration_samples, self.preprocess)
            mode = compile if compile in (True, "background") else True
            self._compiled = ServedBackend(backend, self.spec, self._module, mode, cache_dir, threads=threads,
                                           streams=streams, options=options, calibration=calibration)

    # -- lifetime -----------------------------------------------------------------------------------------
    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks and release the compiled graphs; a child build still running is left to finish
        its cache entry in the background (one line on stderr). The explainer cannot be used afterwards."""
        if self._compiled is not None:
            self._compiled.close()
        self._recorder.close()

    @cached_property
    def spec(self) -> FastCAMSpec:
        """What this explainer's graph computes (built once; the cache key and the export metadata)."""
        model = self._module
        return FastCAMSpec(
            model=self.name,
            model_class=f"{type(model).__module__}.{type(model).__qualname__}",
            weights=weights_hash(model),
            layers=tuple((i.name, i.call, bool(i.relu)) for i in self.layers),
            head_layer=self.info.linear_head if self.closed_form else None,
            head="linear" if self.closed_form else "gradient",
            statistic=self.statistic,
            norm=self.norm_name,
            layer_weights=tuple(float(w) for w in self.weights),
            method=self.method,
            cam=self.cam_name,
            topk=self.topk,
            channels_last=self.channels_last,
            precision=self.precision,
        )

    @property
    def model(self) -> nn.Module:
        """The classifier (eval mode, on ``device``)."""
        return self._module

    def preprocess(self, images: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        """RGB uint8 (H, W, 3) or (N, H, W, 3) -> normalised (N, 3, h, w) float32 on the model's device."""
        return self._preprocess(images)

    # -- the engine ---------------------------------------------------------------------------------------
    def explain(
        self,
        images: np.ndarray | Tensor | Sequence[np.ndarray],
        target: int | Sequence[int] | Tensor | None = None,
        *,
        size: OutputSize = None,
        method: str | None = None,
    ) -> SaliencyResult:
        """Explain a batch: RGB uint8 (H, W, 3) / (N, H, W, 3), or a preprocessed float tensor (N, 3, h, w).

        A clip model takes clips instead: uint8 (T, H, W, 3) / (N, T, H, W, 3) or a preprocessed
        (N, 3, T, h, w); its maps come back per frame, (N, T, H, W) (scales (N, L, T, H, W)).

        ``target`` is the class the CAM explains: top-1 by default, one index, or one per image.
        ``size`` is where the maps come back: ``None`` at the input images' (H, W), ``"model"`` at the model
        input's (h, w) (what the frame layer uses: it resizes only the maps a view draws), or an explicit
        ``(H, W)``. ``method`` selects ``saliency`` for this call (default: the explainer's ``method``).
        """
        if not self._recorder.attached:
            raise RuntimeError("this Explainer is closed")
        timings: dict[str, float] = {}
        t0 = _now(self.device)
        x, out_size = prepare_input(self, images, size)
        t1 = _now(self.device)
        timings["preprocess"] = (t1 - t0) * 1e3
        run = None
        if self._compiled is not None and self._graph_cam(method) == self.cam_name:
            run = self._compiled.runner(x)
        if run is not None:
            n = x.shape[0]
            tgt = None if target is None else resolve_targets(torch.empty(n, self.info.num_classes), target)
            plain = self._compiled.plain_ms.get(tuple(x.shape))
            if plain is not None:
                timings["plain"] = plain  # this runtime's plain forward pass, timed after its build
            return self._explain_graph(run, x, out_size, tgt, timings, t0, method or self.method)
        if self._compiled is not None:
            with self._compiled.exclusive.hold():  # shared; a build in this process tracing holds it alone
                logits, acts = self.forward(x)
        else:
            logits, acts = self.forward(x)
        t2 = _now(self.device)
        timings["forward"] = (t2 - t1) * 1e3
        result = self.saliency(logits, acts, out_size, target, method=method)
        t3 = _now(self.device)
        timings["saliency"] = (t3 - t2) * 1e3
        timings["total"] = (t3 - t0) * 1e3
        engine = "eager" if self._compiled is None else self._compiled.label(x)
        return _with_timings(result, timings, engine)

    def _explain_graph(
        self,
        run: Callable[[Tensor, Tensor], GraphOutput],
        x: Tensor,
        out_size: tuple[int, ...],
        target: Tensor | None,
        timings: dict[str, float],
        t0: float,
        method: str,
    ) -> SaliencyResult:
        """One call of the backend's graph, assembled into the result the eager engine returns.
        ``target``: None (top-1) or (N,) classes already checked."""
        tgt = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device) if target is None else target
        t1 = _now(self.device)
        out = run(x, tgt)
        t2 = _now(self.device)
        timings["forward"] = (t2 - t1) * 1e3
        # ``method`` selects ``saliency`` for this call; its CAM is the graph's (explain checks)
        result = assemble(method, out.logits, out.target, out.cam_small, out.maps, out_size, self._weights_t,
                          self.class_names, self.topk, tuple(i.label for i in self.layers), timings,
                          self.backend)
        t3 = _now(self.device)
        timings["saliency"] = (t3 - t2) * 1e3
        timings["total"] = (t3 - t0) * 1e3
        return result

    def _graph_cam(self, method: str | None) -> str:
        """The CAM a call with ``method`` needs (the compiled graph holds one)."""
        method = method or self.method
        _choose("method", method, METHODS)
        return method if method in ("gradcam", "gradcampp") else self.fused_cam

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """One forward pass of a preprocessed batch: logits (N, classes) and the scale-end activations."""
        if self.closed_form:
            with torch.inference_mode():
                logits = self._module(x)
        else:
            with torch.no_grad():  # the hook switches grad on after the last scale-end layer
                logits = self._module(x)
        return logits, self._recorder.pop()

    def saliency(
        self,
        logits: Tensor,
        acts: Sequence[Tensor],
        out_size: tuple[int, int],
        target: int | Sequence[int] | Tensor | None = None,
        *,
        method: str | None = None,
    ) -> SaliencyResult:
        """Everything after the forward pass: SMOE maps, normalisation, combination, CAM and fusion."""
        method = method or self.method
        _choose("method", method, METHODS)
        cam_name = method if method in ("gradcam", "gradcampp") else self.fused_cam
        tgt = resolve_targets(logits, target)
        with torch.inference_mode(self.closed_form):
            cam_small = self._cam(logits, acts, tgt, cam_name)
        if self.to_grid is not None:
            acts = [self.to_grid(a) for a in acts]
        with torch.inference_mode():
            maps = self._maps(acts, self._relu)
        # the one host-side assembler every backend's graph outputs go through (rtsal/engine/result.py)
        return assemble(method, logits.detach(), tgt, cam_small.detach(), maps, out_size, self._weights_t,
                        self.class_names, self.topk, tuple(i.label for i in self.layers))

    def _cam(self, logits: Tensor, acts: Sequence[Tensor], target: Tensor, cam_name: str) -> Tensor:
        a = acts[-1]
        if self.closed_form:
            a = torch.relu(a) if self.layers[-1].relu else a
            return cam_from_linear_head(a, self._head_weight, target, cam_name)
        score = logits.gather(1, target.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(score, a)
        if self.to_grid is not None:  # transformer tokens -> (N, C, h, w) grids
            a, g = self.to_grid(a), self.to_grid(g)
        return CAMS[cam_name](a.detach(), g)


OutputSize = tuple[int, int] | str | None


def prepare_input(
    explainer: Explainer, images: np.ndarray | Tensor | Sequence[np.ndarray], size: OutputSize = None
) -> tuple[Tensor, tuple[int, ...]]:
    """Images as :meth:`Explainer.explain` takes them -> model input (N, 3, h, w) on the explainer's device
    and the (H, W) the maps are returned at (``size``: None = the images', ``"model"`` = (h, w), or
    (H, W)). Clip models: (N, 3, T, h, w) and (T, H, W) (see :mod:`rtsal.engine.kinds`)."""
    if explainer.kind == "clip":
        x, in_size = clip_input(explainer._preprocess, images, explainer.device, explainer.min_frames)
        if size is None:
            return x, in_size
        if size == "model":
            return x, tuple(int(d) for d in x.shape[2:])
        if isinstance(size, str) or len(size) != 2 or min(size) < 1:
            raise UsageError(f"size must be None, 'model' or (H, W) with positive sides, got {size!r}")
        return x, (*in_size[:-2], int(size[0]), int(size[1]))
    if isinstance(images, Tensor) and images.is_floating_point():
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise UsageError(
                f"a preprocessed batch must be (N, 3, h, w) with N > 0, got {tuple(images.shape)}"
            )
        if not _all_finite(images):
            raise UsageError("the input batch holds NaN or infinite values")
        x = images.to(explainer.device, torch.float32)  # float16/float64 inputs are converted
        if explainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        in_size = (int(images.shape[2]), int(images.shape[3]))
    else:
        x = explainer.preprocess(images)
        shape = images.shape if hasattr(images, "shape") else np.shape(images[0])
        in_size = (int(shape[-3]), int(shape[-2]))
    if size is None:
        return x, in_size
    if size == "model":
        return x, (int(x.shape[2]), int(x.shape[3]))
    if isinstance(size, str) or len(size) != 2 or min(size) < 1:
        raise UsageError(f"size must be None, 'model' or (H, W) with positive sides, got {size!r}")
    return x, (int(size[0]), int(size[1]))


def _all_finite(x: Tensor) -> bool:
    """True when every value of ``x`` is finite. A finite sum means every value is (NaN and inf propagate);
    only an overflowing sum of huge finite values needs the element-wise check (10x slower). On the CPU the
    sum runs in numpy on the calling thread: a torch reduction of a frame wakes torch's OpenMP pool, which
    right after an OpenVINO or ONNX Runtime inference fights that runtime's own threads for the cores
    (measured: 12 ms for the 150k values of a 224x224 frame after an OpenVINO call, against 30 us)."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64, torch.float16):
        a = x.detach().numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isfinite(a.sum())) or bool(np.isfinite(a).all())
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def resolve_targets(logits: Tensor, target: int | Sequence[int] | Tensor | None) -> Tensor:
    """The class each image is explained for: top-1 by default, one index for all, or one per image: (N,)."""
    n, n_cls = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    raw = torch.as_tensor(target)
    if raw.is_floating_point() or raw.is_complex() or raw.dtype == torch.bool:
        if not (raw.is_floating_point() and bool((raw == raw.round()).all())):
            raise UsageError(f"target must be a class index (an integer), got {target!r}")
    t = raw.to(device=logits.device, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise UsageError(f"target: got {t.numel()} classes for a batch of {n}")
    if bool(((t < 0) | (t >= n_cls)).any()):
        raise UsageError(f"target class out of range 0..{n_cls - 1}")
    return t


def _choose(what: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise UsageError(f"unknown {what} {value!r}: choose one of {', '.join(options)}")


def _with_timings(result: SaliencyResult, timings: dict[str, float], engine: str = "eager") -> SaliencyResult:
    from dataclasses import replace

    return replace(result, timings=timings, engine=engine)
