"""The engine end to end: one forward pass, hooks owned, maps shaped and oriented, real predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import photo
from torch import nn

from rtsal.engine.explainer import Explainer
from rtsal.errors import UsageError


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    with Explainer("resnet18", weights=None) as ex:
        yield ex


def test_embedded_model_recognises_real_photos(lite0):
    assert lite0.explain(photo("coffee")).topk.labels[0][0] == "espresso"
    assert lite0.explain(photo("chelsea")).topk.labels[0][0] in {"Egyptian cat", "tabby", "tiger cat"}


def test_result_shapes_ranges_and_fusion(lite0, coffee):
    r = lite0.explain(coffee)
    h, w = coffee.shape[:2]
    assert r.logits.shape == (1, 1000)
    assert r.scales.shape == (1, 5, h, w)
    for m in (r.smoe, r.cam, r.fused, r.nonclass, r.saliency):
        assert m.shape == (1, h, w) and m.dtype == torch.float32
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    assert torch.allclose(r.fused, r.smoe * r.cam)
    assert torch.allclose(r.nonclass, r.smoe * (1 - r.cam), atol=1e-6)
    assert r.saliency is r.fused and r.method == "fastcam"
    assert int(r.target[0]) == int(r.topk.indices[0, 0]) == int(r.logits.argmax())
    assert r.topk.probs.shape == (1, 5) and float(r.topk.probs[0, 0]) > float(r.topk.probs[0, 1])
    assert set(r.timings) == {"preprocess", "forward", "saliency", "total"}


def test_exactly_one_forward_pass_per_explain(lite0, coffee):
    calls: dict[str, int] = {}
    handles = [
        m.register_forward_pre_hook(lambda mod, args, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
        for n, m in lite0.model.named_modules()
    ]
    try:
        with torch.inference_mode():
            lite0.model(lite0.preprocess(coffee))
        plain = dict(calls)
        calls.clear()
        lite0.explain(coffee)
        assert calls == plain and calls[""] == 1
    finally:
        for h in handles:
            h.remove()


def test_batches_and_preprocessed_tensors(resnet18):
    g = np.random.default_rng(0)
    batch = g.integers(0, 255, size=(3, 96, 128, 3), dtype=np.uint8)
    r = resnet18.explain(batch)
    assert r.fused.shape == (3, 96, 128) and r.scales.shape == (3, 5, 96, 128)
    single = resnet18.explain(batch[1])
    assert torch.allclose(single.fused[0], r.fused[1], atol=1e-5)
    x = resnet18.preprocess(batch)
    rt = resnet18.explain(x)
    assert rt.fused.shape == (3, x.shape[2], x.shape[3])
    assert torch.allclose(rt.logits, r.logits, atol=1e-4)


@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480)])
def test_non_square_maps_keep_orientation(lite0, h, w):
    image = np.full((h, w, 3), 20, np.uint8)
    image[20 : h // 4, w - w // 4 : w - 20] = (250, 250, 250)  # a bright patch in the top-right corner
    r = lite0.explain(image)
    smoe = r.smoe[0].numpy()
    assert smoe.shape == (h, w)
    quadrants = {
        "top-right": smoe[: h // 2, w // 2 :].mean(),
        "top-left": smoe[: h // 2, : w // 2].mean(),
        "bottom-right": smoe[h // 2 :, w // 2 :].mean(),
        "bottom-left": smoe[h // 2 :, : w // 2].mean(),
    }
    assert max(quadrants, key=quadrants.get) == "top-right", quadrants
    y, x = np.unravel_index(np.argmax(smoe), smoe.shape)
    assert y < h // 2 and x > w // 2


def test_target_class_changes_the_cam(lite0, coffee):
    top = lite0.explain(coffee)
    other = lite0.explain(coffee, target=281)  # tabby cat
    assert int(other.target[0]) == 281
    assert not torch.allclose(top.cam, other.cam)
    assert torch.allclose(top.smoe, other.smoe)  # SMOE maps are class-agnostic


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((0, 64, 64, 3), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        [],
        "coffee.jpg",
        torch.zeros(2, 1, 32, 32),
    ],
    ids=["grey-2d", "rgba", "empty-batch", "float-pixels", "empty-list", "string", "one-channel-tensor"],
)
def test_bad_images_are_usage_errors(resnet18, bad):
    with pytest.raises(UsageError):
        resnet18.explain(bad)


def test_bad_options_are_usage_errors():
    for kwargs, msg in [
        ({"method": "magic"}, "unknown method"),
        ({"norm": "zscore"}, "unknown norm"),
        ({"statistic": "median"}, "unknown statistic"),
        ({"layer_weights": [1, 2]}, "2 numbers for 5"),
    ]:
        with pytest.raises(UsageError, match=msg):
            Explainer("resnet18", weights=None, **kwargs)
    with Explainer("resnet18", weights=None) as ex, pytest.raises(UsageError, match="out of range"):
        ex.explain(np.zeros((32, 32, 3), np.uint8), target=1000)


def test_hooks_removed_on_exit_and_on_error():
    torch.manual_seed(0)
    ex = Explainer("resnet18", weights=None)
    model = ex.model
    assert hooks_left(model) > 0
    with pytest.raises(RuntimeError, match="boom"), ex:
        raise RuntimeError("boom")
    assert hooks_left(model) == 0
    with pytest.raises(RuntimeError, match="closed"):
        ex.explain(np.zeros((32, 32, 3), np.uint8))


def test_hooks_removed_when_the_forward_pass_fails():
    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 2, 1)
            self.fc = nn.Linear(8, 2)
            self.fail = False

        def forward(self, x):
            a = torch.relu(self.conv(x))
            if self.fail:
                raise RuntimeError("layer exploded")
            return self.fc(a.mean(dim=(2, 3)))

    net = Fails()
    with pytest.raises(RuntimeError, match="layer exploded"), Explainer(net) as ex:
        net.fail = True
        ex.explain(np.zeros((32, 32, 3), np.uint8))
    assert hooks_left(net) == 0


@pytest.mark.parametrize("method", ["fastcam", "smoe", "nonclass", "gradcam", "gradcampp"])
def test_each_method_selects_its_map(method, coffee):
    with Explainer("efficientnet-lite0", method=method) as ex:
        r = ex.explain(coffee)
    expected = {
        "fastcam": r.fused,
        "smoe": r.smoe,
        "nonclass": r.nonclass,
        "gradcam": r.cam,
        "gradcampp": r.cam,
    }
    assert torch.equal(r.saliency, expected[method])


@pytest.mark.parametrize("statistic", ["mean", "std", "max", "entropy"])
@pytest.mark.parametrize("norm", ["gamma", "range"])
def test_other_statistics_and_norms_run(resnet18, statistic, norm):
    with Explainer(resnet18.model, statistic=statistic, norm=norm, layer_weights="prior") as ex:
        r = ex.explain(np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    assert r.smoe.shape == (1, 64, 80) and torch.isfinite(r.smoe).all()


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "vgg16", "convnext_tiny", "densenet121"])
def test_other_backbones_head_autograd(name):
    torch.manual_seed(0)
    image = np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    with Explainer(name, weights=None) as ex:
        r = ex.explain(image)
        assert torch.is_grad_enabled()  # grad mode is the caller's again
        with torch.no_grad():
            ex.explain(image)
            assert not torch.is_grad_enabled()
    assert r.fused.shape == (1, 120, 160) and torch.isfinite(r.fused).all()
    assert 0.0 <= float(r.cam.min()) and float(r.cam.max()) <= 1.0
    assert not any(p.grad is not None for p in ex.model.parameters())  # the head backward touched no weights
