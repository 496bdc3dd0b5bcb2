"""Clip models (3D convolutions over time): registry, probe, engine maps (N, T, H, W), closed-form CAM,
full-backward Grad-CAM against pytorch-grad-cam, bad input. Seeded r3d_18 with random weights, 8x64x64
clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtsal.engine.clips import as_clip_batch, frame_result
from rtsal.engine.explainer import Explainer
from rtsal.errors import UsageError
from rtsal.methods import build_runner
from rtsal.models import MODELS, load_model

T, H, W = 8, 64, 64


@pytest.fixture(scope="module")
def r3d():
    torch.manual_seed(0)
    with Explainer("r3d_18", weights=None, size=H) as e:
        yield e


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """A synthetic clip with structure in space and time: a bright square moving right over a gradient."""
    rng = np.random.default_rng(0)
    frames = np.zeros((T, H, W, 3), np.uint8)
    frames[:] = np.linspace(0, 120, W, dtype=np.uint8)[None, None, :, None]
    for t in range(T):
        x0 = 4 + 5 * t
        frames[t, 20:40, x0 : x0 + 16] = (230, 200, 40)
    return (frames + rng.integers(0, 20, frames.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def x(r3d, clip) -> torch.Tensor:
    return r3d.preprocess(clip)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_registry_uses_torchvision_kinetics_metadata():
    from torchvision.models import get_model_weights

    for name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d"):
        spec = MODELS[name]
        enum = get_model_weights(name).DEFAULT
        t = enum.transforms()
        assert spec.kind == "clip"
        assert spec.mean == pytest.approx(tuple(t.mean)) and spec.std == pytest.approx(tuple(t.std))
        assert spec.size == t.crop_size[0]
        assert spec.categories() == tuple(enum.meta["categories"]) and len(spec.categories()) == 400
    assert MODELS["s3d"].min_frames == get_model_weights("s3d").DEFAULT.meta["min_temporal_size"]


def test_probe_finds_3d_scale_ends_and_the_linear_head(r3d):
    assert [layer.name for layer in r3d.layers] == ["layer1", "layer2", "layer3", "layer4"]
    assert [layer.stride for layer in r3d.layers] == [2, 4, 8, 16]
    assert r3d.info.linear_head == "fc" and r3d.closed_form
    assert len(r3d.class_names) == 400 and r3d.class_names[0] == "abseiling"


def test_explain_gives_per_frame_maps_for_every_input_form(r3d, clip, x):
    one = r3d.explain(clip)
    assert one.saliency.shape == (1, T, H, W)
    assert one.scales.shape == (1, 4, T, H, W)
    for m in (one.saliency, one.smoe, one.cam, one.fused, one.nonclass, one.scales):
        assert torch.isfinite(m).all() and float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    assert float(one.smoe.std()) > 0.01  # the maps vary over space and time
    per_frame = one.smoe.flatten(2).mean(2)
    assert float(per_frame.std()) > 0  # and differ between time steps
    batch = r3d.explain(np.stack([clip, clip[:, :, ::-1]]))
    assert batch.saliency.shape == (2, T, H, W)
    torch.testing.assert_close(batch.smoe[0], one.smoe[0], atol=1e-4, rtol=0)
    pre = r3d.explain(x)
    torch.testing.assert_close(pre.smoe, one.smoe, atol=1e-4, rtol=0)
    list_of_frames = r3d.explain(list(clip))
    torch.testing.assert_close(list_of_frames.smoe, one.smoe, atol=1e-4, rtol=0)


@pytest.mark.parametrize("cam", ["gradcam", "gradcampp"])
def test_closed_form_cam_equals_full_backward(r3d, x, cam):
    """GAP + linear head: dscore/dA is W[c] / (T h w) everywhere, so the closed form is exact."""
    engine = build_runner(cam, r3d).explain(x)
    full = build_runner(f"{cam}-full", r3d).explain(x)
    assert engine.cam.shape == full.saliency.shape == (1, T, H, W)
    assert float(full.saliency.max()) == pytest.approx(1.0)
    torch.testing.assert_close(engine.cam, full.saliency, atol=2e-4, rtol=0)


@pytest.mark.slow
def test_gradcam_full_agrees_with_pytorch_grad_cam_3d(r3d, x):
    """The CAM at layer4's resolution (T/8, H/16, W/16) is the same; after upsampling the two differ only by
    the interpolation (pytorch-grad-cam zooms 3D maps with cubic splines, rtsal resizes trilinearly)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from rtsal.engine.saliency.combine import upsample
    from rtsal.engine.saliency.norm import range_norm
    from rtsal.methods.base import engine_hooks_off

    runner = build_runner("gradcam-full", r3d, layer="layer4")
    with engine_hooks_off(r3d):
        out = runner.compute(x, None)
    raw, ours = out.raw, range_norm(upsample(out.raw, (T, H, W)))  # what runner.explain does with it
    model = r3d.model
    targets = [ClassifierOutputTarget(int(out.target[0]))]
    with GradCAM(model=model, target_layers=[model.layer4]) as ref:
        theirs = ref(input_tensor=x.clone(), targets=targets)
        acts = ref.activations_and_grads.activations[0].cpu().numpy()
        grads = ref.activations_and_grads.gradients[0].cpu().numpy()
        theirs_raw = np.maximum(ref.get_cam_image(x, model.layer4, targets, acts, grads, False), 0)
    model.zero_grad(set_to_none=True)
    assert raw.shape == theirs_raw.shape == (1, 1, 4, 4)
    assert corr(raw, torch.from_numpy(theirs_raw)) >= 0.99
    theirs = torch.from_numpy(np.asarray(theirs))
    assert theirs.shape == ours.shape == (1, T, H, W)
    assert corr(ours, theirs) >= 0.95


def test_guided_methods_run_on_clips(r3d, x):
    for method in ("guided-backprop", "guided-gradcam"):
        r = build_runner(method, r3d).explain(x)
        assert r.saliency.shape == (1, T, H, W)
        assert torch.isfinite(r.saliency).all() and float(r.saliency.max()) > 0


def test_frame_result_is_an_image_result_that_views_draw(r3d, clip):
    from rtsal.engine.saliency.lovi import lovi
    from rtsal.render.views import make_view

    r = r3d.explain(clip)
    f = frame_result(r, 3)
    assert f.saliency.shape == (1, H, W) and f.scales.shape == (1, 4, H, W)
    torch.testing.assert_close(f.saliency[0], r.saliency[0, 3])
    assert lovi(f.scales[0]).shape == (H, W, 3)
    for view in ("overlay", "lovi"):
        out = make_view(view, "jet", 0.5).annotate(clip[3], f, 0)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8


def test_bad_clip_input_is_one_line(r3d, clip):
    with pytest.raises(UsageError, match="got one image"):
        r3d.explain(clip[0])
    with pytest.raises(UsageError, match="clip too short: 4 frame"):
        r3d.explain(clip[:4])
    with pytest.raises(UsageError, match="clip too short"):
        r3d.explain(torch.zeros(1, 3, 2, H, W))
    with pytest.raises(UsageError, match=r"\(N, 3, T, h, w\)"):
        r3d.explain(torch.zeros(1, 3, H, W))
    with pytest.raises(UsageError):
        as_clip_batch(clip.astype(np.float32))


def test_a_clip_to_an_image_model_is_refused():
    torch.manual_seed(0)
    from torchvision.models import resnet18

    with Explainer(resnet18(num_classes=10), size=64) as e:
        assert e.kind == "image"
        with pytest.raises(UsageError, match="clip"):
            e.explain(np.zeros((1, T, H, W, 3), np.uint8))
        with pytest.raises(UsageError, match=r"\(N, 3, h, w\)"):
            e.explain(torch.zeros(1, 3, T, H, W))


@pytest.mark.slow
def test_weights_file_and_nn_module_clip_models(tmp_path, clip):
    """mc3_18 from a state dict file; an nn.Module with Conv3d is taken for a clip model."""
    from torchvision.models.video import mc3_18

    torch.manual_seed(1)
    module = mc3_18(num_classes=400).eval()
    path = tmp_path / "mc3.pt"
    torch.save(module.state_dict(), path)
    with Explainer("mc3_18", weights=str(path), size=H) as e:
        r = e.explain(clip)
        assert e.kind == "clip" and r.saliency.shape == (1, T, H, W)
        with torch.inference_mode():
            ref = module(e.preprocess(clip))
        torch.testing.assert_close(r.logits, ref, atol=1e-4, rtol=1e-4)
    assert load_model(module).kind == "clip"
