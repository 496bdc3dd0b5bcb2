"""`rtsal bench` and rtsal.bench.harness: the measuring loop (on a fake clock), the peers' layer, the CLI."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from rtsal.bench import harness as bm
from rtsal.cli import main


class FakeClock:
    """perf_counter that only moves when a fake workload says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        def fn() -> None:
            self.now += seconds

        return fn


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bm.time, "perf_counter", clock)
    return clock


def entry(run, name="m"):
    return bm.Entry(name, "rtsal", run, lambda: "1 fwd")


def test_measure_interleaves_and_takes_medians(fake_clock):
    import torch

    calls = []
    method = fake_clock.work(0.030)
    t = bm.measure(
        entry(lambda: (calls.append("m"), method())),
        lambda: (calls.append("f"), fake_clock.work(0.010)()),
        torch.device("cpu"),
        iters=5,
        warmup=3,
        budget_s=10.0,
    )
    assert t.iters == 5 and not t.first_call
    assert t.median_ms == pytest.approx(30.0) and t.forward_ms == pytest.approx(10.0)
    assert t.ratio == pytest.approx(3.0)
    assert t.p10_ms == pytest.approx(30.0) and t.p90_ms == pytest.approx(30.0)
    assert calls.count("m") == calls.count("f") == 1 + 2 + 5  # first pair, 2 more warm-ups, 5 timed
    assert calls[-4:] == ["f", "m", "f", "m"] or calls[-4:] == ["m", "f", "f", "m"]


def test_measure_gives_slow_methods_fewer_iterations(fake_clock):
    import torch

    cpu = torch.device("cpu")
    fwd = fake_clock.work(0.1)
    calls = []
    slow = entry(lambda: (calls.append(1), fake_clock.work(1.9)()))
    t = bm.measure(slow, fwd, cpu, iters=30, warmup=3, budget_s=10.0)
    assert t.iters == 5 and not t.first_call  # 10 s / (1.9 + 0.1) s
    calls.clear()
    slower = entry(lambda: (calls.append(1), fake_clock.work(50.0)()))
    durations = iter([0.5] + [0.1] * 20)  # the forward paired with it was slow: the median of more is used
    t = bm.measure(slower, lambda: fake_clock.work(next(durations))(), cpu, iters=30, warmup=3, budget_s=10.0)
    assert t.iters == 1 and t.first_call and len(calls) == 1  # the first call is the sample
    assert t.median_ms == pytest.approx(50_000.0) and t.forward_ms == pytest.approx(100.0)
    assert t.ratio == pytest.approx(500.0)
    assert "*" in bm.format_table([t], "header").splitlines()[3]


def test_ratio_is_the_median_of_paired_ratios(fake_clock):
    """Load that slows a whole pair cancels out: the forward and the method slow down together."""
    import torch

    speed = iter([1, 1, 3, 3, 7, 7, 2, 2, 5, 5, 4, 4])
    state = {}

    def forward():
        state["k"] = next(speed)
        fake_clock.work(0.010 * state["k"])()

    def method():
        fake_clock.work(0.020 * next(speed))()

    t = bm.measure(entry(method), forward, torch.device("cpu"), iters=5, warmup=1, budget_s=10.0)
    assert t.ratio == pytest.approx(2.0)


def test_filters():
    assert bm.selected("rtsal/fastcam", [], [])
    assert bm.selected("pytorch-grad-cam/ScoreCAM", ["scorecam"], [])
    assert not bm.selected("pytorch-grad-cam/ScoreCAM", [], ["grad-cam/"])
    assert bm.selected("rtsal/scorecam", [], ["grad-cam/"])
    assert not bm.selected("captum/LayerGradCam", ["fastcam", "torchcam"], [])
    assert bm.selected("rtsal/fastablationcam", [], ["rtsal/ablationcam"])
    assert not bm.selected("rtsal/ablationcam", [], ["rtsal/ablationcam"])


def test_peer_layer_for_a_shared_module():
    import torch

    from rtsal.models import load_model
    from rtsal.types import LayerInfo

    x = torch.rand(1, 3, 64, 64)
    lite = load_model("efficientnet-lite0", None).module
    name, note = bm.peer_layer_for(lite, LayerInfo("_swish", 1), x)
    assert name == "_bn1" and "_swish#1" in note
    resnet = load_model("resnet18", None).module
    assert bm.peer_layer_for(resnet, LayerInfo("layer4"), x) == ("layer4", "")


SMALL = ["--model", "resnet18", "--weights", "none", "--size", "32", "--iters", "2", "--warmup", "0"]


def test_bench_end_to_end(tmp_path, capsys):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    only = "fastcam,gradcam-full,fastablationcam,grad-cam/GradCAM,grad-cam/EigenCAM,torchcam/GradCAM,Layer"
    code = main(
        ["bench", *SMALL, "--budget", "2", "--only", only, "--json", str(out_json), "--plot", str(out_png)]
    )
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out_json.read_text())
    labels = {(r["library"], r["method"]) for r in data["rows"]}
    assert {("rtsal", "fastcam"), ("rtsal", "gradcam-full"), ("rtsal", "fastablationcam")} <= labels
    assert {
        ("pytorch-grad-cam", "GradCAM"),
        ("pytorch-grad-cam", "EigenCAM"),
        ("captum", "LayerGradCam"),
    } <= labels
    if bm.installed_peers()["torchcam"]:  # in the `bench` extra, not in `test`
        assert ("torchcam", "GradCAM") in labels and ("torchcam", "GradCAMpp") in labels
    assert ("rtsal", "scorecam") not in labels
    for r in data["rows"]:
        assert r["iters"] >= 1 and r["median_ms"] > 0 and r["forward_ms"] > 0 and r["ratio"] > 0
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert data["environment"]["model"] == "resnet18" and data["environment"]["layer"] == "layer4"
    fast = next(r for r in data["rows"] if r["method"] == "fastablationcam")
    assert fast["passes"] == "1 + 1 fwd, 1 after the layer"  # 1x1 grid at 32 px
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "x forward" in out and "fastcam" in out and "LayerGradCam" in out


def test_cskip_sweep(tmp_path, capsys):
    out_json = tmp_path / "c.json"
    args = ["bench", *SMALL, "--target-layer", "layer2", "--cskip-sweep", "0,4", "--json", str(out_json)]
    assert main(args) == 0
    rows = json.loads(out_json.read_text())["cskip"]
    assert [(r["k"], r["channels"]) for r in rows] == [(0, 128), (4, 4)]
    assert rows[0]["corr_mean"] == pytest.approx(1.0, abs=1e-6)  # K=0 is full Score-CAM itself
    assert -1.0 <= rows[1]["corr_min"] <= rows[1]["corr_mean"] < 1.0 - 1e-6
    assert "corr mean" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--iters", "0"], 2, "--iters must be at least 1"),
        (["--cskip-sweep", "8,x"], 2, "--cskip-sweep"),
        (["--json", "/nonexistent-dir/b.json"], 1, "does not exist"),
        (["--only", "no-such-method"], 2, "no method matched"),
        (["--target-layer", "layer9"], 2, "no module named 'layer9'"),
    ],
)
def test_bad_input_is_one_line(args, code, message, capsys):
    assert main(["bench", *SMALL, *args]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_plot_without_matplotlib_fails_before_measuring(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    called = []
    monkeypatch.setattr(bm, "setup", lambda *a, **k: called.append(1))
    assert main(["bench", *SMALL, "--plot", str(tmp_path / "p.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert "--plot needs matplotlib" in err and len(err.splitlines()) == 1
    assert not called and not (tmp_path / "p.png").exists()


def test_bench_backends_every_runtime_against_its_own_plain_forward(tmp_path, capsys):
    """``rtsal bench --backends``: one interleaved loop over every installed backend; each explained row is
    compared with the plain forward of its own runtime and precision (compiled bf16 with ``torch.compile``
    under autocast, OpenVINO int8 with the plain model quantised the same way)."""
    out_json = tmp_path / "backends.json"
    code = main(["bench", "--backends", "--model", "resnet18", "--weights", "none", "--size", "64",
                 "--iters", "3", "--cache-dir", str(tmp_path / "cache"), "--json", str(out_json)])
    assert code == 0
    out = capsys.readouterr().out
    assert "rtsal bench --backends: resnet18 at 64x64" in out
    rows = {r["name"]: r for r in json.loads(out_json.read_text())["rows"]}
    want = {"torch explain": "torch plain"}
    from rtsal.engine.backends import installed

    if installed("compiled"):
        want["compiled explain"] = "torch.compile plain"
        want["compiled explain bf16"] = "torch.compile plain bf16"
    if installed("onnxruntime"):
        want["onnxruntime explain"] = "onnxruntime plain"
    if installed("openvino"):
        want |= {"openvino explain f32": "openvino plain f32", "openvino explain bf16": "openvino plain bf16"}
        if importlib.util.find_spec("nncf") is not None:
            want["openvino explain int8"] = "openvino plain int8"
    for name, base in want.items():
        row = rows[name]
        assert row["base"] == base and row["median_ms"] > 0
        assert row["ratio"] == pytest.approx(row["median_ms"] / rows[base]["median_ms"])
        assert name in out
