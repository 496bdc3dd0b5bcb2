"""The runtime formulations of SMOE Scale (docs/graph-cost.md) against the reference statistic, in eager
PyTorch and exported through ONNX to the runtimes that run them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rtsal.engine.saliency.norm import gauss_norm
from rtsal.engine.saliency.smoe import (
    RUNTIME_STATISTICS,
    STATISTICS,
    channel_mean,
    channel_mean_conv,
    channel_mean_mm,
    log2_sqrt,
    runtime_statistic,
    smoe_scale,
    smoe_scale_conv,
    smoe_scale_mm,
    smoe_scale_sqrt,
)

FORMS = [smoe_scale_sqrt, smoe_scale_mm, smoe_scale_conv]
# paper appendix, Table 3: 64 channels alternating two values
VECTORS = [((0.5, 1.0), 0.064), ((1.0, 2.0), 0.127), ((2.0, 4.0), 0.255), ((2.0, 3.0), 0.074)]


def smoe_ref(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64) + np.float64(np.float32(1e-7))
    m = a.mean(axis=1)
    return m * (np.log2(m) - np.log2(a).mean(axis=1))


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().flatten().numpy(), b.double().flatten().numpy())[0, 1])


@pytest.mark.parametrize("fn", FORMS)
@pytest.mark.parametrize(("pair", "expected"), VECTORS)
def test_paper_vectors(fn, pair, expected):
    col = torch.tensor([pair[0], pair[1]] * 32, dtype=torch.float32).view(1, 64, 1, 1)
    assert fn(col).item() == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("fn", FORMS)
def test_equal_column_is_zero(fn):
    assert abs(fn(torch.full((1, 64, 2, 2), 3.0)).max().item()) < 1e-4


@pytest.mark.parametrize("fn", FORMS)
@pytest.mark.parametrize("channels", [3, 64, 200, 2048])
def test_matches_float64_reference(fn, channels):
    g = torch.Generator().manual_seed(channels)
    a = torch.relu(torch.randn(2, channels, 5, 7, generator=g)) * 3.0  # about half the values exact zeros
    ours = fn(a)
    assert ours.shape == (2, 5, 7)
    np.testing.assert_allclose(ours.numpy(), smoe_ref(a.numpy()), rtol=2e-4, atol=5e-5)


@pytest.mark.parametrize("fn", FORMS)
def test_normalised_maps_agree_over_magnitudes(fn):
    """Activations from 1e-6 to 1e4 (log-uniform, a third of them zero): the gauss-normalised map is the
    reference's at correlation >= 0.99999 and within 1e-4."""
    g = torch.Generator().manual_seed(7)
    a = 10.0 ** (torch.rand(3, 96, 9, 11, generator=g) * 10.0 - 6.0)
    a = torch.where(torch.rand(a.shape, generator=g) < 0.33, torch.zeros_like(a), a)
    ref, ours = gauss_norm(smoe_scale(a)), gauss_norm(fn(a))
    assert corr(ours, ref) >= 0.99999
    assert float((ours - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("fn", FORMS)
def test_clip_activations(fn):
    g = torch.Generator().manual_seed(3)
    a = torch.relu(torch.randn(2, 16, 3, 4, 5, generator=g))  # (N, C, T, H, W)
    np.testing.assert_allclose(fn(a).numpy(), smoe_ref(a.numpy()), rtol=2e-4, atol=5e-5)


def test_log2_sqrt_range():
    x = torch.logspace(-7.1, 12, 200_000)
    err = (log2_sqrt(x).double() - torch.log2(x.double())).abs()
    assert float(err[x <= 1e7].max()) < 1e-5  # activations above 1e7 do not occur in a trained CNN
    assert float(err.max()) < 1e-3


def test_channel_mean_mm_is_the_mean():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(2, 37, 6, 3, generator=g)
    torch.testing.assert_close(channel_mean_mm(a), channel_mean(a), rtol=1e-5, atol=1e-6)


def test_channel_mean_conv_is_the_mean():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(2, 37, 6, 3, generator=g)
    torch.testing.assert_close(channel_mean_conv(a), channel_mean(a), rtol=1e-5, atol=1e-6)
    clip = torch.randn(1, 8, 2, 3, 4, generator=g)  # other ranks: the matrix product
    torch.testing.assert_close(channel_mean_conv(clip), channel_mean(clip), rtol=1e-5, atol=1e-6)


def test_runtime_statistic_table():
    assert runtime_statistic("smoe", "torch") is smoe_scale
    assert runtime_statistic("smoe", "openvino") is smoe_scale_conv
    assert runtime_statistic("smoe", "onnxruntime") is smoe_scale_mm
    assert runtime_statistic("mean", "openvino") is STATISTICS["mean"]
    for table in RUNTIME_STATISTICS.values():
        assert set(table) <= set(STATISTICS)
    with pytest.raises(ValueError, match="statistic"):
        runtime_statistic("nope", "torch")
    with pytest.raises(ValueError, match="runtime"):
        runtime_statistic("smoe", "tensorrt")


class _Maps(nn.Module):
    """A tiny conv trunk whose two ReLU'd scale ends get the statistic and the gauss norm."""

    def __init__(self, statistic) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 24, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(24, 64, 3, stride=2, padding=1)
        self.statistic = statistic

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a1 = self.c1(x)
        a2 = self.c2(torch.relu(a1))
        return gauss_norm(self.statistic(torch.relu(a1))), gauss_norm(self.statistic(torch.relu(a2)))


def _export(statistic, tmp_path):
    pytest.importorskip("onnxscript")
    net = _Maps(statistic).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "maps.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["x"], verbose=False)
    with torch.inference_mode():
        ref = _Maps(smoe_scale).eval()(x)
    return path, x.numpy(), ref


@pytest.mark.parametrize("fn", FORMS)
def test_onnxruntime_runs_the_formulation(fn, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, x, ref = _export(fn, tmp_path)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, r in zip(got, ref, strict=True):
        assert corr(torch.from_numpy(g), r) >= 0.9999


@pytest.mark.parametrize("fn", [smoe_scale_sqrt, smoe_scale_conv])
def test_openvino_runs_the_formulation_without_log(fn, tmp_path):
    ov = pytest.importorskip("openvino")
    path, x, ref = _export(fn, tmp_path)
    model = ov.Core().read_model(str(path))
    # the point of the formulation: no Log over the (N, C, H, W) tensor, only on the (N, H, W) mean
    logs = [op for op in model.get_ops() if op.get_type_name() == "Log"]
    assert logs and all(op.get_input_partial_shape(0).rank.get_length() == 3 for op in logs)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({"x": x})
    for i, r in enumerate(ref):
        assert corr(torch.from_numpy(np.asarray(got[compiled.outputs[i]])), r) >= 0.9999
