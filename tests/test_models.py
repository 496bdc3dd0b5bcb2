"""Model registry, weights loading (safe and strict), and the scale-end layer probe."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from rtsal.engine.probe import probe
from rtsal.errors import ModelError, UsageError
from rtsal.models import MODELS, imagenet_classes, load_model, load_state_dict_file


def names(layers):
    return [l.name if l.call == 0 else f"{l.name}#{l.call}" for l in layers]


def test_registry_has_the_promised_models():
    for name in [
        "efficientnet-lite0",
        "resnet18",
        "resnet50",
        "mobilenet_v3_large",
        "efficientnet_b0",
        "vgg16",
        "densenet121",
        "convnext_tiny",
    ]:
        assert name in MODELS


def test_imagenet_class_names_offline():
    from torchvision.models import ResNet18_Weights

    classes = imagenet_classes()
    assert len(classes) == 1000 and classes[967] == "espresso"
    assert classes == tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def test_the_default_model_starts_without_torchvision():
    """torchvision imports torch._dynamo (seconds of start-up); the embedded Lite0 needs none of it."""
    code = ("import sys; from rtsal.engine.explainer import Explainer; Explainer('efficientnet-lite0'); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "False"


def test_unknown_model_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown model 'resnet9000'"):
        load_model("resnet9000")


@pytest.mark.parametrize(
    ("model", "expected", "head"),
    [
        ("resnet50", ["relu", "layer1", "layer2", "layer3", "layer4"], "fc"),
        ("efficientnet-lite0", ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.10", "_swish#1"], "_fc"),
        ("mobilenet_v3_large", ["features.1", "features.3", "features.6", "features.12", "features"], None),
        ("convnext_tiny", ["features.1", "features.3", "features.5", "features"], None),
        (
            "densenet121",
            [
                "features.relu0",
                "features.denseblock1",
                "features.denseblock2",
                "features.denseblock3",
                "features",
            ],
            "classifier",
        ),
    ],
)
def test_probe_finds_scale_ends(model, expected, head):
    loaded = load_model(model, weights=None)
    was = loaded.module.training
    info = probe(loaded.module)
    assert names(info.layers) == expected
    assert info.linear_head == head
    assert info.num_classes == 1000
    assert loaded.module.training == was
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in loaded.module.modules())
    strides = [l.stride for l in info.layers]
    assert strides == sorted(strides) and strides[-1] == 32


def test_probe_marks_linear_bottlenecks_for_relu():
    info = probe(load_model("efficientnet-lite0", weights=None).module)
    assert [l.relu for l in info.layers] == [True, True, True, True, False]
    assert [l.channels for l in info.layers] == [16, 24, 40, 112, 1280]


def test_probe_explicit_layers_and_bad_names():
    module = load_model("resnet18", weights=None).module
    info = probe(module, layers=["layer3", "layer4"])
    assert names(info.layers) == ["layer3", "layer4"] and info.layers[0].size == (14, 14)
    with pytest.raises(UsageError, match="no module named 'layer9'"):
        probe(module, layers=["layer9"])
    with pytest.raises(UsageError, match="NAME#CALL"):
        probe(module, layers=["layer4#x"])


def test_torchvision_weights_from_a_saved_file(tmp_path):
    torch.manual_seed(3)
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    loaded = load_model("resnet18", weights=path)
    for (k, v), (k2, v2) in zip(source.state_dict().items(), loaded.module.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    # a training checkpoint holding the state dict, saved from DataParallel ("module." prefixes)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    assert torch.equal(load_model("resnet18", weights=ckpt).module.fc.weight, source.fc.weight)


def test_bad_weights_files(tmp_path):
    with pytest.raises(ModelError, match="weights file not found"):
        load_model("resnet18", weights=tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(ModelError, match="not a PyTorch weights file"):
        load_model("resnet18", weights=text)
    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    with pytest.raises(ModelError, match="do not fit this model"):
        load_model("resnet18", weights=wrong)


class Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code!",))


def test_arbitrary_pickles_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": Evil()}, f)
    with pytest.raises(ModelError, match="not a PyTorch weights file"):
        load_state_dict_file(path)
    assert "unpickled arbitrary code" not in capsys.readouterr().out


def test_default_torchvision_weights_offline_is_one_clear_error(monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match="could not get the pretrained resnet18 weights.*--weights PATH"):
        load_model("resnet18", weights="default")


def test_any_module_classifier_is_accepted():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    loaded = load_model(net)
    info = probe(loaded.module)
    assert names(info.layers) == ["1", "3"] and info.linear_head == "6" and info.num_classes == 4
