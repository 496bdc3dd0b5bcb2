"""CAM from the head: closed form == head-only autograd; agreement with pytorch-grad-cam."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtsal.engine.explainer import Explainer
from rtsal.engine.saliency.cam import gradcam, gradcam_linear, gradcampp, gradcampp_linear


def seeded_resnet18():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    # random init gives near-identical logits; spread the head so the CAM has a clear target
    with torch.no_grad():
        model.fc.weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def photo_batch():
    import cv2

    from conftest import photo

    return np.stack([cv2.resize(photo(n), (160, 128)) for n in ("coffee", "chelsea")])


@pytest.mark.parametrize("cam", ["gradcam", "gradcampp"])
def test_closed_form_equals_head_autograd(cam, photo_batch):
    model = seeded_resnet18()
    with Explainer(model, method=cam) as closed:
        assert closed.closed_form
        a = closed.explain(photo_batch)
    with Explainer(model, method=cam, head_autograd=True) as autograd:
        assert not autograd.closed_form
        b = autograd.explain(photo_batch)
    assert torch.allclose(a.logits, b.logits, atol=1e-4)
    assert torch.allclose(a.cam, b.cam, atol=1e-4)
    assert float(a.cam.std()) > 0.05  # a real map, not a constant


def test_linear_forms_equal_the_general_forms():
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(2, 16, 5, 6, generator=g))
    gk = torch.randn(2, 16, generator=g)
    g_full = (gk / 30.0)[:, :, None, None].expand(2, 16, 5, 6)
    assert torch.allclose(gradcam_linear(a, gk / 30.0), gradcam(a, g_full), atol=1e-6)
    assert torch.allclose(gradcampp_linear(a, gk / 30.0), gradcampp(a, g_full), rtol=1e-4, atol=1e-6)


def corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


@pytest.mark.parametrize("which", ["gradcam", "gradcampp"])
def test_agrees_with_pytorch_grad_cam(which, photo_batch):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = seeded_resnet18()
    with Explainer(model, method=which, channels_last=False) as ex:
        ours = ex.explain(photo_batch)
        x = ex.preprocess(photo_batch)
    peer_cls = GradCAM if which == "gradcam" else GradCAMPlusPlus
    with peer_cls(model=model, target_layers=[model.layer4]) as peer:
        targets = [ClassifierOutputTarget(int(t)) for t in ours.target]
        theirs = peer(input_tensor=x, targets=targets)  # (N, h, w), min-max normalised
    for i in range(len(photo_batch)):
        mine = ours.cam[i].numpy()
        import cv2

        ref = cv2.resize(theirs[i], (mine.shape[1], mine.shape[0]), interpolation=cv2.INTER_LINEAR)
        assert corr(mine, ref) >= 0.99, (i, corr(mine, ref))
