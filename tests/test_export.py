"""rtsal export and the ONNX Runtime backend: the exported graph agrees with the engine, runs without torch,
and every bad input gives one line and leaves nothing at the output path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DATA, photo
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from rtsal.cli import main  # noqa: E402

SIZE = (160, 160)
PHOTOS = ("chelsea", "coffee", "astronaut")
MAPS = ("saliency", "scales", "smoe", "cam", "fused", "nonclass")


# Exporting a real model takes 10-15 s on a quiet 2-core CPU: each model is exported once per module.
@pytest.fixture(scope="module")
def lite0_onnx(tmp_path_factory) -> Path:
    """Lite0 (real weights) through the CLI, any batch size."""
    out = tmp_path_factory.mktemp("lite0") / "lite0.onnx"
    rc = main(["export", "efficientnet-lite0", "-o", str(out), "--size", *map(str, SIZE), "--dynamic-batch"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def lite0_pair(lite0_onnx):
    """The engine and the ONNX Runtime explainer of the same Lite0, shared by the batch sizes."""
    from rtsal.deploy.runtime import OrtExplainer
    from rtsal.engine.explainer import Explainer

    with Explainer("efficientnet-lite0", size=SIZE) as ex, OrtExplainer(lite0_onnx) as ort:
        yield ex, ort


def seeded_weights(folder: Path, name: str) -> Path:
    """A state dict of a randomly initialised torchvision model, seeded (weights=None, reproducible)."""
    from torchvision import models as tvm

    torch.manual_seed(0)
    path = folder / f"{name}.pt"
    torch.save(tvm.get_model(name, weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet18_onnx(tmp_path_factory) -> tuple[Path, Path]:
    import rtsal

    folder = tmp_path_factory.mktemp("resnet18")
    weights = seeded_weights(folder, "resnet18")
    out = rtsal.export("resnet18", folder / "r18.onnx", weights=weights, size=SIZE, dynamic_batch=True)
    return out, weights


@pytest.fixture(scope="module")
def mnv3_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """MobileNetV3-Small has no pool -> linear head: its CAM comes from the head's traced gradient, inside
    the graph (batch 1: the trace holds one batch size)."""
    import rtsal

    folder = tmp_path_factory.mktemp("mnv3")
    weights = seeded_weights(folder, "mobilenet_v3_small")
    out = rtsal.export("mobilenet_v3_small", folder / "m.onnx", weights=weights, size=SIZE)
    return out, weights


def batch(explainer, n: int) -> torch.Tensor:
    return torch.cat([explainer.preprocess(photo(name)) for name in PHOTOS[:n]]).contiguous()


def assert_agree(ort_result, ref, maps=MAPS) -> None:
    """Top-1 identical; each map per image: correlation >= 0.999, max abs difference <= 0.01."""
    assert torch.equal(ort_result.topk.indices[:, 0], ref.topk.indices[:, 0])
    assert torch.allclose(ort_result.logits, ref.logits, rtol=1e-3, atol=1e-3 * float(ref.logits.abs().max()))
    for name in maps:
        a, b = getattr(ort_result, name), getattr(ref, name)
        assert a is not None and a.shape == b.shape, name
        for i in range(a.shape[0]):
            x, y = a[i].flatten().double(), b[i].flatten().double()
            assert float((x - y).abs().max()) <= 0.01, (name, i)
            if float(y.std()) > 1e-6:
                assert float(torch.corrcoef(torch.stack([x, y]))[0, 1]) >= 0.999, (name, i)


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 3])
def test_lite0_agrees_with_the_engine(lite0_pair, n):
    ex, ort = lite0_pair
    x = batch(ex, n)
    got, ref = ort.explain(x), ex.explain(x)
    assert_agree(got, ref)
    assert got.layers == ref.layers and got.method == "fastcam"
    assert ort.class_names == ex.class_names
    assert got.topk.labels[0][0] == {"chelsea": "Egyptian cat"}.get(PHOTOS[0])


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 3])
def test_resnet18_agrees_with_the_engine(resnet18_onnx, n):
    from rtsal.deploy.runtime import OrtExplainer
    from rtsal.engine.explainer import Explainer

    path, weights = resnet18_onnx
    with Explainer("resnet18", weights=weights, size=SIZE) as ex, OrtExplainer(path) as ort:
        x = batch(ex, n)
        assert_agree(ort.explain(x), ex.explain(x))


@pytest.mark.slow
def test_head_gradient_model_exports_its_cam_and_agrees(mnv3_onnx):
    from rtsal.deploy.runtime import OrtExplainer
    from rtsal.engine.explainer import Explainer

    path, weights = mnv3_onnx
    with Explainer("mobilenet_v3_small", weights=weights, size=SIZE) as ex, OrtExplainer(path) as ort:
        assert not ex.closed_form and ort.spec.head == "gradient"
        for n in (1, 3):  # a batch of 3 runs one image at a time through the batch-1 file
            x = batch(ex, n)
            assert_agree(ort.explain(x), ex.explain(x))


@pytest.mark.slow
def test_metadata_and_outputs(lite0_onnx):
    import onnx

    from rtsal.engine.explainer import Explainer
    from rtsal.engine.spec import FastCAMSpec

    model = onnx.load(str(lite0_onnx))
    meta = {p.key: p.value for p in model.metadata_props}
    spec = FastCAMSpec.from_json(meta["rtsal.spec"])  # what the graph computes: the spec, as JSON
    assert spec.model == "efficientnet-lite0" and spec.size == SIZE and spec.batch == 1
    assert spec.method == "fastcam" and spec.norm == "gauss" and spec.head == "linear"
    with Explainer("efficientnet-lite0", size=SIZE, channels_last=False) as ex:
        assert spec == ex.spec.for_input((1, 3, *SIZE))  # the same weights hash, layers and settings
    settings = json.loads(meta["rtsal.settings"])  # how it was exported
    assert settings["dynamic_batch"] and settings["input"] == "float" and settings["target"] == "top-1"
    assert json.loads(meta["rtsal.mean"]) == [0.5, 0.5, 0.5]
    assert len(json.loads(meta["rtsal.class_names"])) == 1000
    assert json.loads(meta["rtsal.layers"])[0] == "_blocks.0"
    assert [o.name for o in model.graph.output] == ["logits", *MAPS]


@pytest.mark.slow
def test_onnxruntime_and_numpy_alone_read_logits_and_maps(lite0_onnx):
    """A process that cannot import torch or rtsal gets the prediction and its maps."""
    script = f"""
import sys
sys.modules["torch"] = None
sys.modules["rtsal"] = None
import json
import numpy as np
import onnxruntime as ort
s = ort.InferenceSession({str(lite0_onnx)!r}, providers=["CPUExecutionProvider"])
meta = s.get_modelmeta().custom_metadata_map
mean = np.array(json.loads(meta["rtsal.mean"]), np.float32).reshape(1, 3, 1, 1)
std = np.array(json.loads(meta["rtsal.std"]), np.float32).reshape(1, 3, 1, 1)
img = np.load(sys.argv[1]).astype(np.float32) / 255.0
x = ((img.transpose(2, 0, 1)[None] - mean) / std).astype(np.float32)
out = dict(zip([o.name for o in s.get_outputs()], s.run(None, {{"images": x}})))
names = json.loads(meta["rtsal.class_names"])
fused = out["fused"]
print(json.dumps({{"top1": names[int(out["logits"].argmax())], "fused": list(fused.shape),
                  "scales": list(out["scales"].shape), "range": [float(fused.min()), float(fused.max())],
                  "torch": "torch" in sys.modules and sys.modules["torch"] is not None}}))
"""
    import cv2

    image = cv2.resize(photo("chelsea"), SIZE[::-1], interpolation=cv2.INTER_AREA)
    npy = lite0_onnx.parent / "chelsea.npy"
    np.save(npy, image)
    proc = subprocess.run([sys.executable, "-c", script, str(npy)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["top1"] == "Egyptian cat" and not got["torch"]
    assert got["fused"] == [1, *SIZE] and got["scales"] == [1, 5, *SIZE]
    assert 0.0 <= got["range"][0] < got["range"][1] <= 1.0


@pytest.mark.slow
def test_image_command_with_onnxruntime_backend(lite0_onnx, tmp_path, capsys):
    rc = main(["image", str(DATA / "chelsea.jpg"), "-o", str(tmp_path), "--backend", "onnxruntime",
               "--onnx", str(lite0_onnx)])
    assert rc == 0
    assert "Egyptian cat" in capsys.readouterr().out
    assert (tmp_path / "chelsea.png").stat().st_size > 0


class SmallCNN(nn.Module):
    """Three strided stages, global average pool, linear head: a closed-form CAM, quick to export."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        widths = ((3, 16), (16, 32), (32, 64))
        self.stages = nn.Sequential(*(nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.BatchNorm2d(c_out),
                                                    nn.ReLU()) for c_in, c_out in widths))
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(x).mean(dim=(2, 3)))


def test_uint8_input_export_resizes_and_normalises_inside(tmp_path):
    """Fixed 120x160 uint8 frames in, maps at model resolution; close to the engine, whose resize is OpenCV's
    INTER_AREA and not the graph's antialiased bilinear, so the bound is looser than the float export's."""
    import cv2

    import rtsal
    from rtsal.deploy.runtime import OrtExplainer
    from rtsal.engine.explainer import Explainer

    torch.manual_seed(0)
    model = SmallCNN().eval()
    names = [f"thing {i}" for i in range(10)]
    path = rtsal.export(model, tmp_path / "u8.onnx", size=(64, 64), uint8_input=True, frame_size=(120, 160),
                        class_names=names)
    frames = np.stack([cv2.resize(photo(n), (160, 120), interpolation=cv2.INTER_AREA) for n in PHOTOS[:2]])
    with OrtExplainer(path) as ort, Explainer(model, size=(64, 64), class_names=names) as ex:
        assert ort.uint8 and ort.class_names == tuple(names)
        got, ref = ort.explain(frames), ex.explain(frames)
        other = ort.explain(photo("coffee"))  # resized to the frame size first, maps at the image's size
    assert got.saliency.shape == (2, 120, 160) and other.saliency.shape == (1, *photo("coffee").shape[:2])
    assert torch.equal(got.topk.indices[:, 0], ref.topk.indices[:, 0])
    for i in range(2):
        corr = torch.corrcoef(torch.stack([got.smoe[i].flatten(), ref.smoe[i].flatten()]))[0, 1]
        assert float(corr) > 0.95


def test_exported_maps_are_the_assembler_over_the_backend_outputs(tmp_path):
    """One graph: the file's outputs equal ``result.assemble`` over the onnxruntime backend's graph outputs,
    the backend built from the spec read back from the file's metadata."""
    import onnxruntime as ort

    import rtsal
    from rtsal.deploy.graph import OUTPUTS
    from rtsal.deploy.runtime import read_metadata
    from rtsal.engine.backends.onnxruntime import OnnxRuntimeBackend
    from rtsal.engine.result import MAP_OF_METHOD, assemble
    from rtsal.engine.spec import FastCAMSpec

    torch.manual_seed(0)
    model = SmallCNN().eval()
    path = rtsal.export(model, tmp_path / "small.onnx", size=(64, 96), method="nonclass",
                        layer_weights=[1, 2, 3])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = read_metadata(session)
    spec = FastCAMSpec.from_json(meta["spec"])
    assert spec.shape == (1, 3, 64, 96) and spec.method == "nonclass" and spec.layer_weights == (1, 2, 3)
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    backend = OnnxRuntimeBackend(spec, model, cache_dir=tmp_path / "cache")
    weights = torch.tensor(spec.layer_weights) / sum(spec.layer_weights)
    for seed in range(3):
        x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(seed))
        got = dict(zip(OUTPUTS, session.run(None, {"images": x.numpy()}), strict=True))
        out = backend.run(x, torch.full((1,), -1, dtype=torch.long))
        ref = assemble(spec.method, out.logits, out.target, out.cam_small, out.maps, spec.size, weights,
                       meta["class_names"], spec.topk, tuple(meta["layers"]))
        assert MAP_OF_METHOD["nonclass"] == "nonclass" and torch.equal(ref.saliency, ref.nonclass)
        for name in OUTPUTS:
            torch.testing.assert_close(torch.from_numpy(got[name]), getattr(ref, name), rtol=1e-4, atol=2e-5,
                                       msg=name)
    backend.close()


# -- bad input: one line, nothing at the output path ---------------------------------------------------------
def one_line_error(capsys, rc: int, code: int, message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1 and message in err, err


def nothing_left(folder: Path, keep: tuple[str, ...] = ()) -> None:
    assert sorted(p.name for p in folder.iterdir() if p.name not in keep) == []


def test_unknown_model(tmp_path, capsys):
    rc = main(["export", "no-such-net", "-o", str(tmp_path / "x.onnx")])
    one_line_error(capsys, rc, 2, "unknown model 'no-such-net'")
    nothing_left(tmp_path)


@pytest.mark.parametrize("where", ["missing-dir", "a-dir"])
def test_unwritable_output(tmp_path, capsys, where):
    out = tmp_path / "missing" / "x.onnx" if where == "missing-dir" else tmp_path
    rc = main(["export", "resnet18", "--weights", "none", "-o", str(out)])
    one_line_error(capsys, rc, 1, "-o")
    nothing_left(tmp_path)


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not touched")
    rc = main(["export", "resnet18", "--weights", str(weights), "-o", str(weights)])
    one_line_error(capsys, rc, 1, "is the input file")
    assert weights.read_bytes() == b"not touched"
    nothing_left(tmp_path, keep=("w.pt",))


class Untraceable(nn.Module):
    """A small CNN with a channel cummax, an operator neither ONNX exporter can convert."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cummax(self.b(self.a(x)), dim=1).values
        return self.fc(y.mean(dim=(2, 3)))


def test_untraceable_model_is_one_line_and_leaves_nothing(tmp_path):
    import rtsal
    from rtsal.errors import ModelError

    torch.manual_seed(0)
    with pytest.raises(ModelError, match="cannot trace") as info:
        rtsal.export(Untraceable(), tmp_path / "u.onnx", size=(64, 64), method="smoe")
    assert "\n" not in str(info.value)
    nothing_left(tmp_path)


def test_dynamic_batch_of_a_head_gradient_model_is_one_line(tmp_path, capsys):
    rc = main(["export", "mobilenet_v3_small", "--weights", "none", "--dynamic-batch", "-o",
               str(tmp_path / "m.onnx")])
    one_line_error(capsys, rc, 2, "leave out --dynamic-batch")
    nothing_left(tmp_path)


def test_gamma_norm_and_bad_size_are_refused_before_work(tmp_path, capsys):
    import rtsal
    from rtsal.errors import UsageError

    with pytest.raises(UsageError, match="gamma"):
        rtsal.export("resnet18", tmp_path / "g.onnx", weights=None, norm="gamma")
    rc = main(["export", "resnet18", "-o", str(tmp_path / "s.onnx"), "--size", "8", "224"])
    one_line_error(capsys, rc, 2, "32..4096")
    nothing_left(tmp_path)


def test_missing_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    rc = main(["export", "resnet18", "--weights", "none", "-o", str(tmp_path / "x.onnx")])
    one_line_error(capsys, rc, 2, 'pip install "rtsal[onnx]"')
    rc = main(["image", str(DATA / "coffee.jpg"), "-o", str(tmp_path / "o"), "--backend", "onnxruntime",
               "--onnx", str(tmp_path / "x.onnx")])
    one_line_error(capsys, rc, 2, 'pip install "rtsal[onnx]"')


def test_backend_option_errors(tmp_path, capsys):
    rc = main(["image", str(DATA / "coffee.jpg"), "-o", str(tmp_path), "--onnx", "x.onnx", "--backend",
               "openvino"])
    one_line_error(capsys, rc, 2, "--backend onnxruntime")
    not_rtsal = tmp_path / "plain.onnx"
    not_rtsal.write_bytes(b"garbage")
    rc = main(["image", str(DATA / "coffee.jpg"), "-o", str(tmp_path / "o"), "--backend", "onnxruntime",
               "--onnx", str(not_rtsal)])
    one_line_error(capsys, rc, 1, "cannot load")


@pytest.mark.slow
def test_video_command_with_onnxruntime_backend(lite0_onnx, tmp_path, capsys):
    """The bundled clip's first frames through ONNX Runtime: a video and a CSV row per frame."""
    out, table = tmp_path / "out.mp4", tmp_path / "frames.csv"
    rc = main(["video", str(DATA / "demo.mp4"), "-o", str(out), "--end", "0.3", "--csv", str(table),
               "--batch", "2", "--backend", "onnxruntime", "--onnx", str(lite0_onnx), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rows = table.read_text().strip().splitlines()
    assert out.stat().st_size > 0 and len(rows) >= 3  # header + at least 2 frames


@pytest.mark.slow
def test_frame_layer_switches_engine_methods_on_onnxruntime(lite0_pair):
    """Hotkey m on the ONNX Runtime backend: engine methods come from the same run; the others say why not."""
    from rtsal.errors import UsageError
    from rtsal.frame.infer import FrameExplainer

    _, ort = lite0_pair
    frames = FrameExplainer(ort, "fastcam")  # not closed here: the fixture owns the session
    first = frames.explain(photo("coffee"))
    assert first.method == "fastcam" and first.saliency.shape == (1, *SIZE)  # model resolution
    frames.set_method("smoe")
    second = frames.explain(photo("coffee"))
    assert second.method == "smoe" and torch.equal(second.saliency, second.smoe)
    with pytest.raises(UsageError, match="torch backend"):
        frames.set_method("scorecam")
