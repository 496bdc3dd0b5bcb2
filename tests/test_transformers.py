"""Vision transformers: token grids, scales, head-autograd CAM, gradcam-full against pytorch-grad-cam with a
reshape transform. Seeded vit_b_16 and swin_t with random weights at 224 (vit_b_16 takes only 224 x 224)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtsal.engine.explainer import Explainer
from rtsal.engine.tokens import to_grid
from rtsal.errors import UsageError
from rtsal.methods import build_runner
from rtsal.methods.base import engine_hooks_off

VIT_LAYER = "encoder.layers.encoder_layer_10"


def _seeded(name: str) -> Explainer:
    torch.manual_seed(0)
    e = Explainer(name, weights=None)
    head = e.model.heads.head if name == "vit_b_16" else e.model.head
    with torch.no_grad():  # torchvision initialises ViT's head to zeros: every logit 0, every gradient 0
        head.weight.normal_(0, 0.02)
    return e


@pytest.fixture(scope="module")
def vit():
    with _seeded("vit_b_16") as e:
        yield e


@pytest.fixture(scope="module")
def swin():
    with _seeded("swin_t") as e:
        yield e


@pytest.fixture(scope="module")
def image(coffee) -> np.ndarray:
    import cv2

    return cv2.resize(coffee, (224, 224), interpolation=cv2.INTER_AREA)


def corr(a, b) -> float:
    a, b = torch.as_tensor(a).flatten().double(), torch.as_tensor(b).flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_to_grid_drops_the_class_token_and_permutes_swin():
    t = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # class token + 2x2 patches, 3 channels
    g = to_grid(t, "vit")
    assert g.shape == (2, 3, 2, 2)
    torch.testing.assert_close(g[1, :, 0, 1], t[1, 2])  # patch 1 (row 0, col 1) is token 2
    s = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(to_grid(s, "swin"), s.permute(0, 3, 1, 2))
    with pytest.raises(UsageError, match="square"):
        to_grid(torch.zeros(1, 6, 3), "vit")


def test_scales_are_blocks_at_depths_and_swin_stages(vit, swin):
    names = [f"encoder.layers.encoder_layer_{k}" for k in (2, 5, 8, 10)]
    assert [layer.name for layer in vit.layers] == names
    assert {layer.stride for layer in vit.layers} == {16}
    assert {layer.channels for layer in vit.layers} == {768}
    assert [layer.name for layer in swin.layers] == ["features.1", "features.3", "features.5", "features.7"]
    assert [layer.stride for layer in swin.layers] == [4, 8, 16, 32]
    assert [layer.channels for layer in swin.layers] == [96, 192, 384, 768]
    assert not vit.closed_form and not swin.closed_form  # head autograd: class token / LayerNorm heads
    assert all(layer.relu for layer in vit.layers + swin.layers)  # signed tokens: ReLU before SMOE


@pytest.mark.parametrize("name", ["vit", "swin"])
def test_explain_gives_maps_from_token_grids(name, request, image):
    e = request.getfixturevalue(name)
    r = e.explain(image)
    assert r.saliency.shape == (1, 224, 224) and r.scales.shape == (1, 4, 224, 224)
    for m in (r.saliency, r.smoe, r.cam, r.scales):
        assert torch.isfinite(m).all() and 0.0 <= float(m.min()) and float(m.max()) <= 1.0
    assert float(r.cam.std()) > 0.01 and float(r.smoe.std()) > 0.01


def _reference_gradcam(model, layer, x, target, reshape):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as ref:
        out = ref(input_tensor=x.clone(), targets=[ClassifierOutputTarget(target)])
    model.zero_grad(set_to_none=True)
    return np.asarray(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "layer"), [("vit", VIT_LAYER), ("swin", "features.7")]
)
def test_gradcam_full_agrees_with_pytorch_grad_cam_reshape_transform(name, layer, request, image):
    """pytorch-grad-cam's documented reshape transforms: ViT drops the class token and reshapes to 14 x 14;
    Swin permutes its channels-last stages."""
    e = request.getfixturevalue(name)
    x = e.preprocess(image)
    runner = build_runner("gradcam-full", e, layer=layer)
    with engine_hooks_off(e):
        out = runner.compute(x, None)
    from rtsal.engine.saliency.combine import upsample
    from rtsal.engine.saliency.norm import range_norm

    ours = range_norm(upsample(out.raw, (224, 224)))  # what runner.explain does with it

    def vit_reshape(t):
        return t[:, 1:, :].reshape(t.size(0), 14, 14, t.size(2)).permute(0, 3, 1, 2)

    def swin_reshape(t):
        return t.permute(0, 3, 1, 2)

    module = dict(e.model.named_modules())[layer]
    theirs = _reference_gradcam(
        e.model, module, x, int(out.target[0]), vit_reshape if name == "vit" else swin_reshape
    )
    assert theirs.shape == (1, 224, 224)
    assert corr(ours, theirs) >= 0.99


def test_vit_refuses_other_sizes(vit):
    with pytest.raises(UsageError, match=r"\(N, 3, T, h, w\)|clip"):
        vit.explain(np.zeros((1, 4, 224, 224, 3), np.uint8))
