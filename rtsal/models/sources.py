"""Where a model comes from, and the configuration it carries.

``--model`` takes a registered name, any torchvision classifier by its torchvision name, ``timm:NAME``,
``hf:ID_OR_DIR`` (a local folder or the local Hugging Face cache) or ``module.path:factory`` (a user's
code, like ``uvicorn app:main``). Each source reads what the model says about itself: timm's pretrained
config (``resolve_data_config``) and ImageNet label info, a Hugging Face config (``id2label``) and image
processor config, torchvision's weights (``transforms()``, ``meta["categories"]``). ImageNet's constants are
the fallback only where a model says nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rtsal.errors import ModelError, UsageError
from rtsal.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODELS,
    LoadedModel,
    Weights,
    torchvision_builder,
)
from rtsal.models.weights import apply_state_dict, load_state_dict_file

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODEL_FORMS", "config_of_module", "load_source"]

MODEL_FORMS = "a registered name, a torchvision classifier, timm:NAME, hf:ID_OR_DIR or module.path:factory"


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:limit]


def load_source(model: str, weights: Weights) -> LoadedModel:
    """A ``--model`` string (see :data:`MODEL_FORMS`) -> the model and its configuration."""
    if model in MODELS:
        raise ValueError("registered names are built by rtsal.models.load_model")
    if model.startswith("timm:"):
        return _timm(model.removeprefix("timm:"), weights)
    if model.startswith("hf:"):
        return _hf(model.removeprefix("hf:"), weights)
    if ":" in model:
        return _factory(model, weights)
    return _torchvision(model, weights)


# -- torchvision --------------------------------------------------------------------------------------------
def torchvision_classifiers() -> list[str]:
    """torchvision's image classification models (not detection, segmentation, video or quantised)."""
    import torchvision
    from torchvision import models as tvm

    return sorted(tvm.list_models(module=torchvision.models))


def _torchvision(name: str, weights: Weights) -> LoadedModel:
    from torchvision import models as tvm

    if name not in torchvision_classifiers():
        if name in tvm.list_models():
            raise UsageError(f"{name} is a torchvision model but not an image classifier")
        from difflib import get_close_matches

        near = get_close_matches(name, sorted({*MODELS, *torchvision_classifiers()}), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise UsageError(f"unknown model {name!r}{hint}: use {MODEL_FORMS}")
    module = torchvision_builder(name)(weights)
    return _with_config(name, module, "torchvision", torchvision_config(name, weights == "default"))


def torchvision_config(name: str, pretrained: bool) -> dict[str, Any]:
    """size (the crop), mean/std, interpolation, crop and class names from torchvision's default weights.

    The crop size describes the pretrained weights (``vit_h_14``'s is 518); randomly initialised models are
    built at the architecture's default size, so the size is kept only for pretrained weights."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(name).DEFAULT
    t = enum.transforms()
    crop = int(t.crop_size[0])
    cfg: dict[str, Any] = {
        "mean": tuple(t.mean), "std": tuple(t.std),
        "interpolation": str(t.interpolation.value), "crop_pct": crop / int(t.resize_size[0]),
        "class_names": tuple(enum.meta["categories"]),
    }
    if pretrained:
        cfg["size"] = crop
    return cfg


# -- timm ---------------------------------------------------------------------------------------------------
def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"this model needs {module}: pip install 'rtsal[{extra}]'") from None


def _timm(name: str, weights: Weights) -> LoadedModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    timm = _require("timm", "timm")
    if not name or not timm.is_model(name):
        from difflib import get_close_matches

        near = get_close_matches(name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join('timm:' + n for n in near)}?)" if near else ""
        raise UsageError(f"unknown timm model {name!r}{hint}: see timm.list_models()")
    pretrained = weights == "default"
    try:
        with _hub_offline():
            module = timm.create_model(name, pretrained=pretrained)
    except Exception as exc:  # no cached file, a hub error
        if not pretrained:
            raise ModelError(f"could not build timm:{name}: {_one_line(exc)}") from None
        raise ModelError(
            f"timm's pretrained {name} weights are not in the local Hugging Face cache: download them once "
            f"(python -c \"import timm; timm.create_model('{name}', pretrained=True)\"), or pass --weights "
            f"PATH (state dict or safetensors) or --weights none"
        ) from None
    if weights not in (None, "default"):
        apply_state_dict(module, load_state_dict_file(weights), str(weights))
    return _with_config(f"timm:{name}", module.eval(), "timm", timm_config(module))


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Pretrained weights from the local Hugging Face cache only (rtsal never downloads: a missing file is
    one line naming the fix, not a minute of retries)."""
    try:
        import huggingface_hub.constants as hub
    except ImportError:
        yield
        return
    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def timm_config(module: nn.Module) -> dict[str, Any]:
    """What timm's pretrained config says: input size (fixed or not), mean/std, interpolation, crop,
    ImageNet class names, and the stages ``feature_info`` names."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=module)
    _, h, w = data["input_size"]
    fixed = bool(getattr(module, "pretrained_cfg", {}).get("fixed_input_size", False))
    cfg: dict[str, Any] = {
        "mean": tuple(float(v) for v in data["mean"]), "std": tuple(float(v) for v in data["std"]),
        "interpolation": str(data.get("interpolation", "bilinear")), "crop_pct": data.get("crop_pct"),
        "size": (int(h), int(w)) if fixed or h != w else int(h),
    }
    names = _timm_class_names(module)
    if names:
        cfg["class_names"] = names
    info = getattr(module, "feature_info", None)
    if info is not None:
        entries = list(info.info) if hasattr(info, "info") else list(info)
        modules = dict(module.named_modules())
        found = tuple(e["module"] for e in entries if isinstance(e, dict) and e.get("module") in modules)
        if found:
            cfg["candidates"] = found
    return cfg


def _timm_class_names(module: nn.Module) -> tuple[str, ...] | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        if not subset:
            return None
        info = ImageNetInfo(subset)
        n = int(getattr(module, "num_classes", 0) or 0)
        names = tuple(info.index_to_description(i).split(",")[0].strip() for i in range(n))
    except Exception:  # an unknown subset, or a class count that does not match it
        return None
    return names or None


# -- Hugging Face -------------------------------------------------------------------------------------------
def _hf_wrapper() -> type:
    from torch import nn

    class HFClassifier(nn.Module):
        """A Hugging Face image classifier called with a pixel tensor; returns ``.logits`` (N, classes)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):  # noqa: D401
            return self.model(pixel_values=x).logits

    return HFClassifier


def wrap_hf(model: nn.Module) -> nn.Module:
    """``model`` read through ``.logits``: rtsal's engine takes a module that returns a logits tensor."""
    return _hf_wrapper()(model).eval()


def _hf(ident: str, weights: Weights) -> LoadedModel:
    transformers = _require("transformers", "transformers")
    if not ident:
        raise UsageError("hf: needs a model id or a folder, e.g. hf:./my-vit or hf:google/vit-base-patch16")
    looks_like_path = ident.startswith((".", "/", "~")) or os.sep in ident.rstrip(os.sep).split("/", 1)[-1]
    if looks_like_path and not os.path.isdir(os.path.expanduser(ident)):
        raise ModelError(f"hf:{ident}: no such folder (save a model there with save_pretrained)")
    ident = os.path.expanduser(ident)
    try:
        config = transformers.AutoConfig.from_pretrained(ident, local_files_only=True)
    except Exception as exc:  # OSError (not cached), ValueError (an unknown model type)
        where = "folder" if os.path.isdir(ident) else "model id"
        raise ModelError(
            f"hf:{ident}: no Hugging Face config found for this {where} offline ({_one_line(exc, 100)}): "
            f"download it once (huggingface-cli download {ident}) or give a folder saved with save_pretrained"
        ) from None
    auto = transformers.AutoModelForImageClassification
    try:
        if weights == "default":
            model = auto.from_pretrained(ident, local_files_only=True)
        else:
            model = auto.from_config(config)
    except Exception as exc:
        raise ModelError(f"hf:{ident}: not buildable as an image classifier offline: {_one_line(exc)}") \
            from None
    if weights not in (None, "default"):
        apply_state_dict(model, load_state_dict_file(weights), str(weights))
    cfg = hf_config(model.config, ident)
    return _with_config(f"hf:{ident}", wrap_hf(model), "hf", cfg)


# PIL resampling codes that image processors store
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def hf_config(config: Any, ident: str | None = None) -> dict[str, Any]:
    """Class names from ``id2label``; size, mean/std, interpolation and crop from the image processor's config
    (if ``ident`` has one), else the model config's ``image_size``."""
    cfg: dict[str, Any] = {}
    labels = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(labels)) or 0)
    if labels and n and all(i in labels for i in range(n)):
        names = tuple(str(labels[i]).split(",")[0].strip() for i in range(n))
        if not all(name == f"LABEL_{i}" for i, name in enumerate(names)):  # transformers' placeholders
            cfg["class_names"] = names
    proc: dict[str, Any] = {}
    if ident is not None:
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(ident, local_files_only=True).to_dict()
        except Exception:  # no preprocessor_config.json: the model config alone
            proc = {}
    if proc.get("image_mean") is not None and proc.get("image_std") is not None:
        cfg["mean"] = tuple(float(v) for v in proc["image_mean"])[:3]
        cfg["std"] = tuple(float(v) for v in proc["image_std"])[:3]
    size = proc.get("crop_size") if proc.get("do_center_crop") else None
    size = size or proc.get("size")
    if isinstance(size, dict) and "height" in size and "width" in size:
        cfg["size"] = (int(size["height"]), int(size["width"]))
    elif isinstance(size, dict) and "shortest_edge" in size:
        cfg["size"] = int(size["shortest_edge"])
    else:
        image_size = getattr(config, "image_size", None)
        if isinstance(image_size, int):
            cfg["size"] = (image_size, image_size)
        elif isinstance(image_size, (list, tuple)) and len(image_size) == 2:
            cfg["size"] = (int(image_size[0]), int(image_size[1]))
    if proc.get("resample") in _PIL_RESAMPLE:
        cfg["interpolation"] = _PIL_RESAMPLE[proc["resample"]]
    if proc.get("crop_pct"):
        cfg["crop_pct"] = float(proc["crop_pct"])
    return cfg


# -- a user's code ------------------------------------------------------------------------------------------
def _factory(spec: str, weights: Weights) -> LoadedModel:
    from torch import nn

    path, _, attr = spec.partition(":")
    if not path or not attr or not all(p.isidentifier() for p in path.split(".") + attr.split(".")):
        raise UsageError(f"--model {spec!r}: use module.path:factory (a Python module and a callable in it)")
    if os.getcwd() not in sys.path:  # like uvicorn: modules in the current folder import
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(path)
    except ImportError as exc:
        raise UsageError(f"--model {spec}: cannot import {path} ({_one_line(exc, 100)})") from None
    except Exception as exc:  # an error in the user's module
        raise ModelError(f"--model {spec}: importing {path} failed: {type(exc).__name__}: {_one_line(exc)}") \
            from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--model {spec}: {path} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise UsageError(f"--model {spec}: {attr} is neither an nn.Module nor a factory that returns one")
        try:
            obj = obj()
        except Exception as exc:
            raise ModelError(f"--model {spec}: the factory failed: {type(exc).__name__}: {_one_line(exc)}") \
                from None
    if not isinstance(obj, nn.Module):
        raise UsageError(f"--model {spec}: the factory returned {type(obj).__name__}, not an nn.Module")
    if weights not in (None, "default"):
        apply_state_dict(obj, load_state_dict_file(weights), str(weights))
    module, cfg = config_of_module(obj)
    return _with_config(spec, module.eval(), "factory", cfg)


def config_of_module(module: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A module from anywhere: read a timm model's pretrained config, wrap a Hugging Face model (``.logits``)
    and read its config; anything else says nothing (ImageNet constants, the probe finds the rest)."""
    if getattr(module, "pretrained_cfg", None) and "timm" in sys.modules:
        try:
            return module, timm_config(module)
        except Exception:  # a module that has a pretrained_cfg attribute but is no timm model
            pass
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "id2label") and "transformers" in sys.modules:
        from transformers import PreTrainedModel

        if isinstance(module, PreTrainedModel):
            return wrap_hf(module), hf_config(config, getattr(config, "_name_or_path", None) or None)
    return module, {}


def _with_config(name: str, module: nn.Module, source: str, cfg: dict[str, Any]) -> LoadedModel:
    from torch import nn

    clip = any(isinstance(m, nn.Conv3d) for m in module.modules())
    return LoadedModel(
        name=name,
        module=module,
        mean=cfg.get("mean", IMAGENET_MEAN),
        std=cfg.get("std", IMAGENET_STD),
        class_names=cfg.get("class_names", ()),
        kind="clip" if clip else "auto",
        size=cfg.get("size"),
        interpolation=cfg.get("interpolation", "bilinear"),
        crop_pct=cfg.get("crop_pct"),
        candidates=cfg.get("candidates"),
        source=source,
    )

