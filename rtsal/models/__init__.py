"""Models: a ``--model`` string or an ``nn.Module`` gives a classifier, its preprocessing and class names.

Sources (see :mod:`rtsal.models.sources`): the registry (:mod:`rtsal.models.registry`), any torchvision
classifier by name, ``timm:NAME``, ``hf:ID_OR_DIR`` and ``module.path:factory``. Weights files are state
dicts or safetensors (:mod:`rtsal.models.weights`), never unpickled objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rtsal.errors import UsageError
from rtsal.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    MODELS,
    LoadedModel,
    ModelSpec,
    Weights,
    imagenet_classes,
    register,
)
from rtsal.models.sources import MODEL_FORMS
from rtsal.models.weights import apply_state_dict, load_state_dict_file

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "KINETICS_MEAN", "KINETICS_STD", "MODELS", "MODEL_FORMS", "LoadedModel",
    "ModelSpec", "Weights", "apply_state_dict", "imagenet_classes", "load_model", "load_state_dict_file",
    "register",
]


def load_model(
    model: str | nn.Module | LoadedModel = "efficientnet-lite0",
    weights: Weights = "default",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> LoadedModel:
    """Build a model from a ``--model`` string (:data:`MODEL_FORMS`) or wrap an ``nn.Module`` classifier
    (a ``LoadedModel`` is taken as it is, so a caller may change the module before the engine probes it).

    Preprocessing and class names come from the model's own configuration where it has one (a timm or
    Hugging Face module passed in is read like ``timm:``/``hf:``), else ImageNet's; ``mean``, ``std`` and
    ``class_names`` override them.

    Example:
        >>> loaded = load_model("timm:resnet18", weights=None)  # doctest: +SKIP
        >>> loaded.size, loaded.interpolation, loaded.candidates[-1]  # doctest: +SKIP
        (224, 'bicubic', 'layer4')
    """
    from torch import nn

    if weights is not None and weights != "default" and not isinstance(weights, (str, os.PathLike)):
        raise UsageError(f"weights must be 'default', a file path or None, not {type(weights).__name__}")
    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, nn.Module):
        from rtsal.models.sources import config_of_module

        module, cfg = config_of_module(model.eval())
        clip = any(isinstance(m, nn.Conv3d) for m in module.modules())
        loaded = LoadedModel(
            type(model).__name__, module, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD),
            cfg.get("class_names", ()), kind="clip" if clip else "auto", size=cfg.get("size"),
            interpolation=cfg.get("interpolation", "bilinear"), crop_pct=cfg.get("crop_pct"),
            candidates=cfg.get("candidates"), source="module",
        )
    elif isinstance(model, str):
        spec = MODELS.get(model)
        if spec is None:
            from rtsal.models.sources import load_source

            loaded = load_source(model, weights)
        else:
            names = spec.categories() if spec.categories is not None else ()
            loaded = LoadedModel(
                spec.name, spec.build(weights), spec.mean, spec.std, names, spec.layers, kind=spec.kind,
                size=spec.size, clip_len=spec.clip_len, min_frames=spec.min_frames,
            )
    else:
        raise UsageError(f"model must be a name ({MODEL_FORMS}) or an nn.Module, not {type(model).__name__}")
    changes: dict = {}
    if mean is not None:
        changes["mean"] = tuple(mean)
    if std is not None:
        changes["std"] = tuple(std)
    if class_names is not None:
        changes["class_names"] = tuple(class_names)
    return replace(loaded, **changes) if changes else loaded
