"""Backends: the spec, each runtime against the eager reference, the OpenVINO blob cache, ``--backend``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import all_photos
from torch import nn

from rtsal.cli import main
from rtsal.engine.spec import FastCAMSpec

DATA = Path(__file__).resolve().parents[1] / "rtsal" / "data"


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def square(image: np.ndarray, side: int = 224) -> np.ndarray:
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def assert_agree(result, ref, floor: float) -> None:
    """Same top-1; the fused map and every scale at correlation >= ``floor``."""
    assert int(result.topk.indices[0, 0]) == int(ref.topk.indices[0, 0])
    assert corr(result.fused, ref.fused) >= floor
    for i in range(ref.scales.shape[1]):
        assert corr(result.scales[:, i], ref.scales[:, i]) >= floor, f"scale {i}"


class Tiny(nn.Module):
    """A seeded classifier with three scales and a GAP -> linear head (builds in seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_explainer(**kw):
    from rtsal.engine.explainer import Explainer

    torch.manual_seed(0)
    return Explainer(Tiny().eval(), weights=None, size=64, **kw)


# -- the spec ----------------------------------------------------------------------------------------------
def test_spec_json_round_trip_and_key(lite0):
    spec = lite0.spec
    assert spec is lite0.spec  # built once
    assert spec.model == "efficientnet-lite0" and spec.head == "linear" and len(spec.layers) == 5
    back = FastCAMSpec.from_json(spec.to_json())
    assert back == spec and back.key() == spec.key()
    shaped = spec.for_input((1, 3, 224, 320))
    assert shaped.shape == (1, 3, 224, 320) and FastCAMSpec.from_json(shaped.to_json()) == shaped
    assert shaped.key() != spec.key() and spec.with_precision("bf16").key() != spec.key()
    data = json.loads(spec.to_json())
    with pytest.raises(ValueError, match="unknown FastCAMSpec fields"):
        FastCAMSpec.from_json({**data, "colour": 1})
    with pytest.raises(ValueError, match="precision"):
        FastCAMSpec.from_json({**data, "precision": "f8"})


# -- each backend against the eager reference --------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0_refs(lite0):
    images = [square(im) for im in all_photos()]  # rtsal/data and rtsal/data/eval
    return images, [lite0.explain(im) for im in images]


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_backend_agrees_with_eager_on_every_bundled_image(backend, lite0_refs, tmp_path):
    """Lite0 (the bundled weights), f32: same top-1 on every photo and eval image, maps >= 0.999."""
    from rtsal.engine.explainer import Explainer

    images, refs = lite0_refs
    with Explainer("efficientnet-lite0", backend=backend, cache_dir=tmp_path) as ex:
        for image, ref in zip(images, refs, strict=True):
            result = ex.explain(image)
            assert result.engine == backend
            assert_agree(result, ref, 0.999)
            assert corr(result.cam, ref.cam) >= 0.999
        timings = result.timings
        assert timings["plain"] > 0  # the same runtime's plain forward, the HUD's base


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_head_gradient_model_agrees(backend, tmp_path):
    """A head without a closed form (MobileNetV3): its traced gradient converts for OpenVINO and exports to
    ONNX (the TorchScript exporter lacks ``aten::as_strided_copy`` / ``aten::view_copy``: rewritten as
    reshapes)."""
    from rtsal.engine.explainer import Explainer

    pytest.importorskip(backend)

    image = square(all_photos()[0], 96)
    torch.manual_seed(0)
    with Explainer("mobilenet_v3_small", weights=None, size=96) as ref_ex:
        ref = ref_ex.explain(image)
    torch.manual_seed(0)  # the same random weights
    with Explainer("mobilenet_v3_small", weights=None, size=96, backend=backend, cache_dir=tmp_path) as ex:
        assert ex.spec.head == "gradient"
        result = ex.explain(image)
    assert result.engine == backend
    assert_agree(result, ref, 0.999)
    assert corr(result.cam, ref.cam) >= 0.999


def test_background_build_serves_eager_first(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with tiny_explainer(backend="openvino", compile="background", cache_dir=tmp_path) as ex:
        first = ex.explain(image)
        assert first.engine == "eager (building openvino)"
        ex._compiled.wait(300)
        later = ex.explain(image)
        assert later.engine == "openvino"
        assert_agree(later, first, 0.999)


def test_bf16_only_on_openvino_and_compiled():
    from rtsal.errors import UsageError

    with pytest.raises(UsageError, match="openvino and compiled backends only"):
        tiny_explainer(backend="torch", precision="bf16")
    with pytest.raises(UsageError, match="openvino backend only"):
        tiny_explainer(backend="onnxruntime", precision="int8")


# -- the OpenVINO blob cache ---------------------------------------------------------------------------------
def test_openvino_blob_is_cached_checked_and_rebuilt_when_corrupt(tmp_path):
    from rtsal.engine.backends.openvino import OpenVINOBackend

    with tiny_explainer() as ex:
        spec, model = ex.spec.for_input((1, 3, 64, 64)), ex.model
        first = OpenVINOBackend(spec, model, cache_dir=tmp_path, threads=1)
        assert first.source == "built"
        blobs = list(tmp_path.glob("*.ovblob"))
        assert len(blobs) == 1 and (tmp_path.stat().st_mode & 0o777) == 0o700
        record = json.loads(blobs[0].with_suffix(".json").read_text())
        assert record["spec"]["spec"] == json.loads(spec.to_json()) and len(record["sha256"]) == 64
        again = OpenVINOBackend(spec, model, cache_dir=tmp_path, threads=1)
        assert again.source == "cache"
        x = torch.randn(1, 3, 64, 64)
        t = torch.full((1,), -1, dtype=torch.long)
        np.testing.assert_allclose(first.run(x, t).logits, again.run(x, t).logits, rtol=1e-5, atol=1e-5)
        data = bytearray(blobs[0].read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, one byte flipped: only the checksum sees it
        blobs[0].write_bytes(bytes(data))
        rebuilt = OpenVINOBackend(spec, model, cache_dir=tmp_path, threads=1)
        assert rebuilt.source == "built"
        np.testing.assert_allclose(rebuilt.run(x, t).logits, first.run(x, t).logits, rtol=1e-5, atol=1e-5)
        for b in (first, again, rebuilt):
            b.close()
        with pytest.raises(RuntimeError, match="closed"):
            first.run(x, t)


# -- the CLI -----------------------------------------------------------------------------------------------
def one_line_error(capsys, rc: int, code: int, message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1 and message in err, err


def test_cli_backend_errors(tmp_path, capsys, monkeypatch, no_model):
    coffee = str(DATA / "coffee.jpg")
    for flag, bad in (("--backend", "tensorrt"), ("--precision", "f16")):
        with pytest.raises(SystemExit) as exit_:
            main(["image", coffee, "-o", str(tmp_path), flag, bad])
        assert exit_.value.code == 2 and f"invalid choice: '{bad}'" in capsys.readouterr().err


def test_cli_missing_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import rtsal.engine.backends as backends

    real = backends.installed
    monkeypatch.setattr(backends, "installed", lambda name: name != "openvino" and real(name))
    rc = main(["image", str(DATA / "coffee.jpg"), "-o", str(tmp_path), "--backend", "openvino"])
    one_line_error(capsys, rc, 2, 'pip install "rtsal[openvino]"')
    assert backends.resolve("auto") != "openvino"


def test_cli_precision_needs_openvino(tmp_path, capsys):
    rc = main(["image", str(DATA / "coffee.jpg"), "-o", str(tmp_path), "--backend", "torch",
               "--precision", "bf16"])
    one_line_error(capsys, rc, 2, "openvino and compiled backends only")


def test_cli_image_on_openvino_names_the_backend(tmp_path, capsys):
    rc = main(["image", str(DATA / "coffee.jpg"), "-o", str(tmp_path / "o"), "--backend", "openvino",
               "--cache-dir", str(tmp_path / "cache"), "--size", "96"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "coffee.png").exists()


def test_auto_rule(monkeypatch):
    import shutil

    from rtsal.engine.backends import AUTO_ORDER, installed, resolve

    assert resolve("auto", image_model=False) == "torch"
    assert resolve("auto", compile_allowed=False) == "torch"
    assert resolve("auto") == next(b for b in AUTO_ORDER if installed(b))
    assert AUTO_ORDER[0] == "compiled" and resolve("auto") == "compiled"  # this machine has a C++ compiler
    # without a C++ compiler the compiled backend is not offered, and auto takes the next installed runtime
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not installed("compiled")
    assert resolve("auto") == next(b for b in AUTO_ORDER[1:] if installed(b))


# -- rtsal export --format -----------------------------------------------------------------------------------
def test_export_suffix_must_match_the_format(tmp_path, capsys):
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"a picture")
    rc = main(["export", "efficientnet-lite0", "-o", str(keep)])
    one_line_error(capsys, rc, 2, "name the file .onnx (ONNX) or .xml (OpenVINO IR)")
    rc = main(["export", "efficientnet-lite0", "-o", str(keep), "--format", "onnx"])
    one_line_error(capsys, rc, 2, "--format onnx writes a .onnx file")
    rc = main(["export", "efficientnet-lite0", "-o", str(tmp_path / "m.onnx"), "--format", "openvino"])
    one_line_error(capsys, rc, 2, "--format openvino writes a .xml file")
    assert keep.read_bytes() == b"a picture" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_export_openvino_ir_holds_the_spec_and_runs(tmp_path, capsys):
    import openvino as ov

    out = tmp_path / "r18.xml"
    rc = main(["export", "resnet18", "--weights", "none", "--size", "64", "64", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.bin", "r18.xml"]
    model = ov.Core().read_model(out)
    spec = FastCAMSpec.from_json(model.get_rt_info(["rtsal", "spec"]).astype(str))
    assert spec.model == "resnet18" and spec.shape == (1, 3, 64, 64)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled([np.zeros((1, 3, 64, 64), np.float32), np.full((1,), -1, np.int64)])
    shapes = [tuple(out[o].shape) for o in compiled.outputs]
    assert shapes[0] == (1, 1000) and shapes[4] == (1, 2, 2)  # logits, ..., the CAM at the last scale
    assert len(shapes) == 5 + len(spec.layers)


def test_hud_overhead_is_against_the_same_runtimes_plain_forward():
    from rtsal.render.hud import HudInfo

    base = dict(fps=30.0, latency_ms=20.0, dropped=0, method="fastcam", cost="1 forward")
    line = HudInfo(**base, forward_ms=10.0, saliency_ms=1.0, engine="openvino", plain_ms=8.8).lines()[1]
    assert line == "forward+maps 10.0 ms  after 1.0 ms (+25% vs plain 8.8)"
    assert "building openvino" in HudInfo(**base, forward_ms=10.0, saliency_ms=1.0,
                                          engine="eager (building openvino)").lines()[2]


def test_engine_options_one_picklable_value():
    import pickle

    from rtsal.cli import build_parser
    from rtsal.options import EngineOptions

    args = build_parser().parse_args(["video", "in.mp4", "-o", "out.mp4", "--backend", "openvino",
                                      "--precision", "bf16", "--size", "160"])
    opts = EngineOptions.from_args(args)
    got = (opts.backend, opts.precision, opts.size, opts.compile_mode)
    assert got == ("openvino", "bf16", 160, "background")
    assert pickle.loads(pickle.dumps(opts)) == opts and EngineOptions.from_args(opts) is opts
    with pytest.raises(AttributeError):
        opts.size = 224  # frozen
