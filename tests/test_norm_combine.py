"""Normalisation (gauss, gamma, range), combination presets and LOVI colouring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from rtsal.engine.saliency.combine import PRIOR_5, combine_maps, layer_weights
from rtsal.engine.saliency.lovi import lovi
from rtsal.engine.saliency.norm import gamma_norm, gauss_norm, range_norm
from rtsal.errors import UsageError


@pytest.mark.parametrize("fn", [gauss_norm, gamma_norm, range_norm])
def test_constant_map_gives_no_nan(fn):
    out = fn(torch.full((2, 7, 7), 3.25))
    assert torch.isfinite(out).all()
    expected = 0.0 if fn is range_norm else 0.5
    assert torch.allclose(out, torch.full_like(out, expected))


def test_gauss_is_normal_cdf_of_zscores():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 9, 11, generator=g) ** 2
    out = gauss_norm(x).numpy()
    for i in range(2):
        v = x[i].double().numpy()
        ref = stats.norm.cdf((v - v.mean()) / v.std(ddof=1))
        np.testing.assert_allclose(out[i], ref, atol=1e-5)


def test_gamma_fits_like_scipy_and_keeps_peaks_high():
    rng = np.random.default_rng(0)
    v = rng.gamma(shape=2.0, scale=1.5, size=(1, 40, 40)).astype(np.float32)
    v[0, 0, 0] = v.max() * 3  # a peak far above 4 theta
    x = torch.from_numpy(v)
    out = gamma_norm(x)[0].numpy()
    shifted = v[0].astype(np.float64) - v.min() + 1e-7
    k, _, theta = stats.gamma.fit(shifted.ravel(), floc=0)
    ref = stats.gamma.cdf(shifted, k, scale=theta)
    np.testing.assert_allclose(out, ref, atol=5e-3)
    assert out[0, 0] > 0.999  # the reference's 8-term series would fall back towards 0 here
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_range_norm_spans_zero_to_one():
    x = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])
    np.testing.assert_allclose(range_norm(x).numpy(), [[[0.0, 0.25], [0.5, 1.0]]])


def test_layer_weight_presets():
    assert layer_weights("equal", 5) == [1.0] * 5
    assert layer_weights("linear", 5) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert layer_weights("prior", 5) == list(PRIOR_5)
    w4 = layer_weights("prior", 4)
    assert len(w4) == 4 and w4[0] == pytest.approx(0.18) and w4[-1] == pytest.approx(0.72)
    assert layer_weights([1, 0, 2], 3) == [1.0, 0.0, 2.0]
    with pytest.raises(UsageError, match="3 scale-end layers"):
        layer_weights([1, 2], 3)
    with pytest.raises(UsageError, match="unknown layer weights"):
        layer_weights("heavy", 3)


@pytest.mark.parametrize(
    ("src", "dst"), [((7, 7), (224, 224)), ((28, 37), (240, 321)), ((112, 90), (50, 61))]
)
def test_upsample_matches_torch_bilinear(src, dst):
    from rtsal.engine.saliency.combine import upsample

    m = torch.rand(2, 3, *src, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.interpolate(m, size=dst, mode="bilinear", align_corners=False)
    out = upsample(m, dst)
    assert out.shape == (2, 3, *dst)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(upsample(m[:, 0], dst), ref[:, 0], atol=1e-5)


def test_combine_is_weighted_mean_of_upsampled_maps():
    a = torch.zeros(1, 2, 2)
    a[0, 0, 0] = 1.0
    b = torch.ones(1, 4, 4)
    combined, stack = combine_maps([a, b], (4, 4), torch.tensor([0.25, 0.75]))
    assert stack.shape == (1, 2, 4, 4)
    up = torch.nn.functional.interpolate(a[:, None], size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(combined, (up + 3.0 * b) / 4.0)



def test_fuse_on_the_host_equals_the_traceable_torch_step():
    """The CPU path (OpenCV and numpy, in place) gives the maps of the torch step the graphs trace."""
    from rtsal.engine.saliency.combine import resize_bilinear
    from rtsal.engine.saliency.fastcam import fuse_maps

    g = torch.Generator().manual_seed(1)
    maps = [torch.rand(3, *hw, generator=g) for hw in ((7, 7), (14, 9), (20, 30))]
    cam = torch.rand(3, 5, 4, generator=g)
    w = torch.tensor([0.2, 0.3, 0.5])
    host = fuse_maps(maps, cam, (20, 30), w)
    ref = fuse_maps(maps, cam, (20, 30), w, resize=resize_bilinear)
    assert host.scales.shape == (3, 3, 20, 30) and host.fused.shape == (3, 20, 30)
    assert torch.equal(host.scales[:, 2], maps[2])  # a map already at the output size is copied as it is
    for a, b in zip(host, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    cam[1] = 0.25  # a constant CAM: range-normalised to 0, not NaN
    assert float(fuse_maps(maps, cam, (20, 30), w).cam[1].abs().max()) == 0.0

def hue_of(bgr: torch.Tensor) -> float:
    import cv2

    pix = bgr.numpy().astype(np.float32).reshape(1, 1, 3)
    return float(cv2.cvtColor(pix, cv2.COLOR_BGR2HSV)[0, 0, 0])


def test_lovi_colours_by_layer_order():
    n = 5
    first = torch.zeros(n, 1, 4)
    first[0] = 1.0
    first[:, 0, 3] = 0.0
    last = torch.zeros(n, 1, 4)
    last[-1] = 1.0
    same = torch.ones(n, 1, 4)
    stack = torch.cat([first[:, :, :1], last[:, :, :1], same[:, :, :1], torch.zeros(n, 1, 1)], dim=2)
    out = lovi(stack)[0]  # (4, 3) BGR
    assert hue_of(out[0]) == pytest.approx(300.0, abs=1.0)  # first layer only: violet
    assert math.isclose(hue_of(out[1]) % 360.0, 0.0, abs_tol=1.0)  # last layer only: red
    assert torch.allclose(out[2], torch.ones(3), atol=1e-6)  # all layers alike: white
    assert torch.equal(out[3], torch.zeros(3))  # nothing: black
