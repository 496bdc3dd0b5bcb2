"""SMOE Scale and the other channel statistics against the paper's test vectors and float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rtsal.engine.saliency.smoe import (
    channel_max,
    channel_mean,
    channel_std,
    log2_fast,
    smoe_scale,
    smoe_scale_fastlog,
    truncnorm_entropy,
)

# docs/design.md ("The maths") / paper appendix Table 3: 64 channels alternating two values
VECTORS = [((0.5, 1.0), 0.064), ((1.0, 2.0), 0.127), ((2.0, 4.0), 0.255), ((2.0, 3.0), 0.074)]


def column(a: float, b: float, channels: int = 64) -> torch.Tensor:
    return torch.tensor([a, b] * (channels // 2), dtype=torch.float32).view(1, channels, 1, 1)


def smoe_ref(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64) + np.float64(np.float32(1e-7))
    m = a.mean(axis=1)
    return m * (np.log2(m) - np.log2(a).mean(axis=1))


@pytest.mark.parametrize("fn", [smoe_scale, smoe_scale_fastlog])
@pytest.mark.parametrize(("pair", "expected"), VECTORS)
def test_smoe_paper_vectors(fn, pair, expected):
    assert fn(column(*pair)).item() == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("fn", [smoe_scale, smoe_scale_fastlog])
def test_smoe_equal_column_is_zero(fn):
    assert abs(fn(torch.full((1, 64, 2, 2), 3.0)).max().item()) < 1e-5


@pytest.mark.parametrize("fn", [smoe_scale, smoe_scale_fastlog])
@pytest.mark.parametrize("channels", [3, 64, 200, 2048])
def test_smoe_matches_float64_reference(fn, channels):
    g = torch.Generator().manual_seed(channels)
    a = torch.relu(torch.randn(2, channels, 5, 7, generator=g)) * 3.0  # about half the values are exact zeros
    ours = fn(a).numpy()
    ref = smoe_ref(a.numpy())
    assert ours.shape == (2, 5, 7)
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-5)


def test_smoe_is_higher_where_channels_disagree():
    a = torch.ones(1, 64, 1, 2)
    a[0, ::2, 0, 1] = 10.0  # second location: a sparse, peaked column
    s = smoe_scale(a)
    assert s[0, 0, 1] > s[0, 0, 0] + 0.1


def test_mean_std_max_against_float64():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 17, 4, 6, generator=g)
    ref = a.double().numpy()
    np.testing.assert_allclose(channel_mean(a).numpy(), ref.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(channel_std(a).numpy(), ref.std(axis=1, ddof=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(channel_max(a).numpy(), ref.max(axis=1), rtol=0, atol=0)


def test_truncnorm_entropy_against_float64():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 32, 3, 3, generator=g) * 2.0 + 0.5
    x = a.double().numpy()
    m, s = x.mean(axis=1), x.std(axis=1, ddof=1)
    alpha = -m / s
    pdf = np.exp(-0.5 * alpha**2) / math.sqrt(2 * math.pi)
    z = 1.0 - (0.5 * (1.0 + np.vectorize(math.erf)(alpha / math.sqrt(2))) + 1e-7)
    ref = np.log(math.sqrt(2 * math.pi * math.e) * s * z) + alpha * pdf / (2 * z)
    np.testing.assert_allclose(truncnorm_entropy(a).numpy(), ref, rtol=1e-4, atol=1e-5)


def test_log2_fast_is_float32_exact():
    edges = torch.tensor([1e-7, 0.5, 1.0, 1.4142135, 1.4142137, 2.0, 3.0])
    x = torch.cat([torch.logspace(-7, 6, 100_000), edges])
    exact = torch.log2(x.double())
    err = (log2_fast(x).double() - exact).abs()
    ulp = exact.abs() * 2.0**-23  # float32 resolution of the result itself
    assert bool((err <= 1e-7 + 2 * ulp).all()), float((err - 2 * ulp).max())
