"""Comparison methods: agreement with pytorch-grad-cam and captum, CSKIP, FastAblationCAM, the runner API."""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from rtsal.engine.explainer import Explainer
from rtsal.errors import UsageError
from rtsal.methods import COSTS, METHODS, build_runner
from rtsal.methods.guided import guided_backprop
from rtsal.methods.scorecam import cskip_channels

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bars

SIZE = 64


def corr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def seeded_resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    with torch.no_grad():
        model.fc.weight.mul_(20.0)  # random init gives near-identical logits; give the head a clear winner
    return model.eval()


@pytest.fixture(scope="module")
def resnet():
    """A seeded ResNet-18 explainer (NCHW, so pytorch-grad-cam and captum see the same model)."""
    with Explainer(seeded_resnet18(), channels_last=False) as ex:
        yield ex


@pytest.fixture(scope="module")
def x():
    from conftest import photo

    image = cv2.resize(photo("chelsea"), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).sub(0.45).div(0.225)


def reference(cam_cls, model, layer, x, target, **kwargs) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cam_cls(model=model, target_layers=[layer], **kwargs) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 64
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]  # (H, W) min-max normalised


# -- agreement with the reference implementations -------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "peer", "layer"),
    [
        ("gradcam-full", "GradCAM", "layer4"),
        ("gradcampp-full", "GradCAMPlusPlus", "layer4"),
        ("gradcam-full", "GradCAM", "layer3"),
        ("gradcampp-full", "GradCAMPlusPlus", "layer3"),
        ("scorecam", "ScoreCAM", "layer2"),
        ("ablationcam", "AblationCAM", "layer2"),
    ],
)
def test_agrees_with_pytorch_grad_cam(resnet, x, method, peer, layer):
    import pytorch_grad_cam

    with build_runner(method, resnet, layer=layer, cskip=0) as runner:
        ours = runner.explain(x)
    model = resnet.model
    theirs = reference(
        getattr(pytorch_grad_cam, peer), model, dict(model.named_modules())[layer], x, int(ours.target)
    )
    mine = ours.saliency[0].numpy()
    assert mine.shape == theirs.shape == (SIZE, SIZE)
    assert mine.std() > 0.1  # a real map
    assert corr(mine, theirs) >= 0.99, corr(mine, theirs)


def test_guided_backprop_agrees_with_captum(resnet, x):
    from captum.attr import GuidedBackprop

    _, tgt, ours = guided_backprop(resnet.model, x)
    theirs = GuidedBackprop(resnet.model).attribute(x.clone().requires_grad_(True), target=int(tgt))
    assert float(ours.abs().sum()) > 0
    assert corr(ours.numpy(), theirs.detach().numpy()) >= 0.99


def test_guided_gradcam_agrees_with_captum(resnet, x):
    from captum.attr import GuidedGradCam

    from rtsal.methods.base import record
    from rtsal.methods.guided import GuidedReLUs, guided_gradcam_grad
    from rtsal.types import LayerInfo

    model = resnet.model
    xg = x.clone().requires_grad_(True)
    keep: list = []
    with GuidedReLUs(model) as guided, record(model, LayerInfo("layer3"), keep, clone=True):
        logits = model(xg)
    tgt, ours = guided_gradcam_grad(model, xg, keep[0], logits, guided)
    theirs = GuidedGradCam(model, model.layer3).attribute(
        x.clone().requires_grad_(True), target=int(tgt), interpolate_mode="bilinear"
    )
    assert corr(ours.numpy(), theirs.detach().numpy()) >= 0.99


def test_guided_differs_from_the_plain_gradient(resnet, x):
    """The guided rule really acts: the plain input gradient is a different picture."""
    _, tgt, guided = guided_backprop(resnet.model, x)
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(resnet.model(xg)[0, int(tgt)], xg)
    assert corr(guided.numpy(), plain.numpy()) < 0.9


# -- CSKIP ----------------------------------------------------------------------------------------------
def test_cskip_keeps_the_channels_with_the_largest_max():
    a = torch.zeros(6, 3, 3)
    for c, peak in enumerate([0.1, 5.0, 0.3, 9.0, 2.0, 0.2]):
        a[c, c % 3, 1] = peak
    assert sorted(cskip_channels(a, 3).tolist()) == [1, 3, 4]
    assert cskip_channels(a, 0).tolist() == list(range(6))
    assert cskip_channels(a, 6).tolist() == list(range(6))


def test_cskip_with_all_channels_equals_plain_scorecam(resnet, x):
    with build_runner("scorecam", resnet, layer="layer2", cskip=0) as full:
        plain = full.explain(x)
    with build_runner("scorecam", resnet, layer="layer2", cskip=128) as every:
        all_k = every.explain(x)
    with build_runner("scorecam", resnet, layer="layer2", cskip=8) as few:
        skipped = few.explain(x)
        assert few.passes == "1 + 8 fwd"
    assert torch.allclose(plain.saliency, all_k.saliency, atol=1e-5)
    assert not torch.allclose(plain.saliency, skipped.saliency, atol=1e-3)


# -- FastAblationCAM ------------------------------------------------------------------------------------
class OneSpot(nn.Module):
    """The class scores depend only on the layer's channel column at (ROW, COL) of an 8x8 grid."""

    ROW, COL = 2, 5

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU())
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.features[0].weight.uniform_(0.0, 0.1)
            self.features[0].bias.fill_(0.1)
            self.fc.weight.copy_(
                torch.tensor([[1.0, 2.0, 1.0, 3.0], [-1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
            )
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.features(x)[:, :, self.ROW, self.COL])


def test_fastablationcam_recovers_the_one_location():
    image = np.full((SIZE, SIZE, 3), 200, np.uint8)
    with build_runner("fastablationcam", OneSpot().eval(), weights=None, size=SIZE) as runner:
        result = runner.explain(image)
    sal = result.saliency[0]
    assert int(result.target) == 0
    r, c = divmod(int(sal.argmax()), SIZE)
    assert (r // 8, c // 8) == (OneSpot.ROW, OneSpot.COL)
    far = torch.ones(SIZE, SIZE, dtype=torch.bool)
    far[(OneSpot.ROW - 1) * 8 : (OneSpot.ROW + 2) * 8, (OneSpot.COL - 1) * 8 : (OneSpot.COL + 2) * 8] = False
    assert float(sal[far].max()) < 1e-3  # nothing anywhere else


class ConcatNet(nn.Module):
    """A DenseNet-like skip: features from before ``block`` are concatenated after it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        s = self.stem(x)
        f = torch.cat([self.pool(s), self.block(s)], 1)
        return self.fc(f.mean(dim=(2, 3)))


class BatchFromInput(nn.Module):
    """A head that takes the batch size from the input, as EfficientNet-Lite's does."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        bs = x.size(0)
        return self.fc(self.block(x).mean(dim=(2, 3)).view(bs, -1))


def naive_location_drops(model: nn.Module, layer: nn.Module, x: torch.Tensor, cls: int) -> torch.Tensor:
    """One full forward pass per location, with a plain forward hook zeroing it. -> (h, w)."""
    with torch.no_grad():
        out = {}
        h0 = layer.register_forward_hook(lambda m, i, o: out.setdefault("a", o))
        base = float(model(x)[0, cls])
        h0.remove()
        _, _, h, w = out["a"].shape
        drops = torch.zeros(h, w)
        for i in range(h):
            for j in range(w):

                def zero(m, args, o, i=i, j=j):
                    o = o.clone()
                    o[:, :, i, j] = 0
                    return o

                handle = layer.register_forward_hook(zero)
                drops[i, j] = base - float(model(x)[0, cls])
                handle.remove()
    return drops


@pytest.mark.parametrize(
    ("make", "mode"), [(ConcatNet, "repeat"), (BatchFromInput, "small"), (seeded_resnet18, "expand")]
)
def test_fastablationcam_drops_equal_one_pass_per_location(make, mode, x):
    from rtsal.methods.fastablationcam import location_drops

    torch.manual_seed(1)
    model = make().eval()
    with build_runner(
        "fastablationcam", model, weights=None, layer="block" if mode != "expand" else "layer3", batch_size=5
    ) as runner:
        layer = dict(model.named_modules())[str(runner.layer)]
        keep = []
        h = layer.register_forward_hook(lambda m, i, o: keep.append(o))
        with torch.inference_mode():
            logits = model(x)
        h.remove()
        cls = int(logits.argmax())
        ours = location_drops(runner.variants, x, keep[0], cls, float(logits[0, cls]), batch_size=5)
        assert runner.variants.mode == mode
        result = runner.explain(x)
    ref = naive_location_drops(model, layer, x, cls)
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max()) + 1e-5)
    assert result.saliency.shape == (1, SIZE, SIZE)


# -- the runner interface -------------------------------------------------------------------------------
def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


@pytest.fixture(scope="module")
def resnet64():
    """A registered model, channels-last, at a 64-pixel short side."""
    with Explainer("resnet18", weights=None, size=64) as ex:
        yield ex


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_a_non_square_frame(method, resnet64):
    from conftest import photo

    ex = resnet64
    image = cv2.resize(photo("coffee"), (70, 50))
    hooks = hook_count(ex.model)
    with build_runner(method, ex, cskip=4) as runner:
        assert runner.cost in COSTS and runner.cost == METHODS[method].cost
        result = runner.explain(image)
        again = runner.explain(np.stack([image, image]), target=[3, 7])
    assert hook_count(ex.model) == hooks  # nothing left behind, the engine's hooks back in place
    engine = ex.explain(image)  # the explainer still works (the runner did not close it)
    assert result.method == method
    assert result.saliency.shape == (1, 50, 70)
    assert float(result.saliency.min()) >= 0.0 and float(result.saliency.max()) <= 1.0
    assert torch.equal(result.target, result.logits.argmax(dim=1))
    assert torch.allclose(result.logits, engine.logits, atol=1e-3)
    assert len(result.topk.labels[0]) == 5
    assert again.saliency.shape == (2, 50, 70) and again.target.tolist() == [3, 7]
    assert {"preprocess", "forward", "saliency", "total"} <= set(result.timings)


def test_engine_runner_selects_the_engine_map(resnet, x):
    with build_runner("gradcam", resnet) as runner:
        ours = runner.explain(x)
    assert resnet.method == "fastcam" and resnet.cam_name == "gradcampp"  # restored
    with Explainer(resnet.model, method="gradcam", channels_last=False) as ex:
        direct = ex.explain(x)
    assert ours.method == "gradcam"
    assert torch.allclose(ours.saliency, direct.saliency, atol=1e-5)


def test_errors_leave_no_hooks(resnet, x):
    hooks = hook_count(resnet.model)
    with pytest.raises(UsageError, match="out of range"):
        build_runner("gradcam-full", resnet).explain(x, target=5000)
    with pytest.raises(UsageError, match="no module named"):
        build_runner("scorecam", resnet, layer="layer9")
    with pytest.raises(UsageError, match="cskip"):
        build_runner("scorecam", resnet, cskip=-1)
    with pytest.raises(UsageError, match="unknown method"):
        build_runner("lime", resnet)
    assert hook_count(resnet.model) == hooks
    assert resnet.explain(x).saliency.shape == (1, SIZE, SIZE)


def test_make_runner_from_cli_options():
    from rtsal.commands.common import add_engine_options, make_runner

    p = argparse.ArgumentParser()
    add_engine_options(p)
    args = p.parse_args(
        [
            "--model",
            "resnet18",
            "--weights",
            "none",
            "--size",
            "64",
            "--method",
            "scorecam",
            "--cskip",
            "4",
            "--target-layer",
            "layer3",
        ]
    )
    image = np.full((64, 80, 3), 128, np.uint8)
    with make_runner(args) as runner:
        assert runner.cost == "N forwards" and runner.cskip == 4 and str(runner.layer) == "layer3"
        assert runner.explain(image).saliency.shape == (1, 64, 80)
        explainer = runner.explainer
    with pytest.raises(RuntimeError, match="closed"):
        explainer.explain(image)  # the runner owned it and closed it
    args = p.parse_args(["--model", "resnet18", "--weights", "none", "--size", "64"])
    with make_runner(args) as runner:
        assert runner.cost == "forward only" and runner.explain(image).method == "fastcam"
