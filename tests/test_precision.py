"""bf16 for the compiled backend (rtsal.engine.precision): the first blocks and every map stay f32, the rest
of the trunk runs under bf16 autocast. Eager runs of a seeded ResNet-18 graph at 64x80 (seconds)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from rtsal.engine.backends.common import graph_of
from rtsal.engine.explainer import Explainer
from rtsal.engine.graph import clean_copy
from rtsal.engine.precision import first_blocks, lower

SIZE = (64, 80)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with Explainer(model, size=SIZE) as ex:
        spec = ex.spec.for_input((1, 3, *SIZE))
        torch.manual_seed(1)
        x = torch.randn(1, 3, *SIZE).contiguous(memory_format=torch.channels_last)
        yield ex, spec, x


def _graph(ex, spec):
    return graph_of(spec, clean_copy(ex.model).eval(), "compiled")


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def test_first_blocks_are_the_modules_before_the_layer(setup):
    ex, _, x = setup
    model = clean_copy(ex.model).eval()
    names = first_blocks(model, "layer1", 0, x)
    assert names[:2] == ["conv1", "bn1"]
    assert "layer1.1.conv2" in names and "layer1.1.bn2" in names
    assert not any(n.startswith(("layer2", "layer3", "layer4", "fc")) for n in names)
    assert first_blocks(model, "conv1", 0, x) == ["conv1"]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_bf16_keeps_the_fine_scales_and_every_output_f32(setup):
    ex, spec, x = setup
    target = torch.full((1,), -1, dtype=torch.long)
    ref = _graph(ex, spec)
    low = lower(_graph(ex, spec), "bf16", x)
    with torch.no_grad():
        want, got = ref(x, target), low(x, target)
    assert all(t.dtype in (torch.float32, torch.long) for t in got)
    scales = [name for name, _, _ in spec.layers]
    maps_want, maps_got = want[5:], got[5:]
    fine = [i for i, m in enumerate(maps_want) if m.shape[-2] * 4 >= SIZE[0]]  # stride <= 4: kept f32
    assert [scales[i] for i in fine] == ["relu", "layer1"]
    for i, (w, g) in enumerate(zip(maps_want, maps_got, strict=True)):
        if i in fine:
            torch.testing.assert_close(g, w)  # computed at f32, as the reference
        else:  # computed from a bf16 trunk: close, not equal
            assert not torch.equal(g, w), scales[i]
            assert _corr(g, w) > 0.99, scales[i]
    assert _corr(got[4], want[4]) > 0.99  # the CAM
    assert torch.equal(got[2], want[2]) or _corr(got[0], want[0]) > 0.999  # top-k from f32 logits


def test_f32_is_untouched_and_other_precisions_are_refused(setup):
    ex, spec, x = setup
    g = _graph(ex, spec)
    forward = g.model.forward
    assert lower(g, "f32", x) is g and g.model.forward == forward
    with pytest.raises(ValueError, match="int8"):
        lower(g, "int8", x)


@pytest.mark.slow
def test_compiled_backend_at_bf16_agrees_and_is_cached_apart(setup, tmp_path):
    """One real AOTInductor build at bf16 (tens of seconds on a loaded CPU): the maps agree with eager f32,
    and the cache entry is not the f32 one."""
    from helpers import photo

    from rtsal.engine.backends.compiled import cache_key
    from rtsal.engine.cache import Cache

    ex, _, _ = setup
    image = photo("coffee")
    want = ex.explain(image)
    with Explainer(ex.model, size=SIZE, backend="compiled", precision="bf16", cache_dir=tmp_path) as comp:
        got = comp.explain(image)
        assert got.engine == "compiled", "the bf16 graph did not build (see stderr)"
        spec = comp.spec.for_input((1, 3, *SIZE))
    key = cache_key(spec)
    assert spec.precision == "bf16" and key["spec"]["precision"] == "bf16"
    assert Cache(tmp_path).lookup(key) is not None
    f32 = cache_key(spec.with_precision("f32"))
    assert f32 != key and Cache(tmp_path).lookup(f32) is None
    assert int(got.topk.indices[0, 0]) == int(want.topk.indices[0, 0])
    for name in ("fused", "cam"):
        assert _corr(getattr(got, name), getattr(want, name)) > 0.99, name
    for i in range(want.scales.shape[1]):
        assert _corr(got.scales[:, i], want.scales[:, i]) > 0.99, i


# -- INT8 on OpenVINO (NNCF) ---------------------------------------------------------------------------------
def test_int8_quantises_the_trunk_but_not_the_first_blocks_or_the_maps(setup):
    pytest.importorskip("nncf")
    from rtsal.engine.backends.openvino import calibration_samples, convert, int8_ignored, quantize

    ex, spec, _ = setup
    samples = calibration_samples(ex.preprocess, spec.shape)
    assert len(samples) == 8 and samples[0].shape == (1, 3, *SIZE)  # 4 photographs + 4 eval images
    assert all((a == b).all() for a, b in zip(samples, calibration_samples(ex.preprocess, spec.shape),
                                              strict=True))  # deterministic
    graph = convert(spec, ex.model)
    q = quantize(graph, samples)  # reshapes ``graph`` to the samples' static shape first
    kept = set(int8_ignored(graph))
    fq = [n for n in q.get_ordered_ops() if n.get_type_name() == "FakeQuantize"]
    assert fq, "nothing was quantised"
    # every quantiser feeds the trunk after the first blocks: none sits on a node left out
    fed = {i.get_node().get_friendly_name() for n in fq for o in n.outputs() for i in o.get_target_inputs()}
    assert fed and not fed & kept
    convs = [n.get_friendly_name() for n in graph.get_ordered_ops() if n.get_type_name() == "Convolution"]
    # the stem stays f32, later blocks are int8 (the last convolutions: the statistic's channel means, kept)
    assert convs[0] in kept and any(c not in kept for c in convs)


def test_int8_backend_builds_once_and_is_refused_where_it_cannot_run(setup, tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    import importlib.util

    from helpers import photo

    from rtsal.errors import UsageError

    ex, _, _ = setup
    image = photo("coffee")
    want = ex.explain(image)
    results = []
    for _ in range(2):
        with Explainer(ex.model, size=SIZE, backend="openvino", precision="int8", cache_dir=tmp_path) as q:
            results.append(q.explain(image))
            source = q._compiled.source[(1, 3, *SIZE)]
    assert [r.engine for r in results] == ["openvino", "openvino"]
    assert source == "cache"  # the calibration is deterministic: the second explainer found the blob
    assert results[0].timings["plain"] > 0  # the plain model quantised the same way, the HUD's base
    torch.testing.assert_close(results[0].fused, results[1].fused)
    assert _corr(results[0].fused, want.fused) > 0.9
    with pytest.raises(UsageError, match="openvino backend only"):
        Explainer(ex.model, size=SIZE, backend="compiled", precision="int8")
    with Explainer(ex.model, size=SIZE, backend="auto", precision="int8", cache_dir=tmp_path) as q:
        assert q.backend == "openvino"  # the one backend that offers it
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(UsageError, match=r'needs nncf, which is not installed: pip install "rtsal\[openvino'):
        Explainer(ex.model, size=SIZE, backend="openvino", precision="int8")


def test_cli_int8_asks_for_a_graph_backend():
    """``rtsal image`` runs eager by default; ``--precision int8`` asks for its backend instead."""
    from rtsal.cli import build_parser
    from rtsal.commands.common import backend_setting

    parse = build_parser().parse_args
    assert backend_setting(parse(["image", "a.jpg", "-o", "out"])) == "torch"
    assert backend_setting(parse(["image", "a.jpg", "-o", "out", "--precision", "int8"])) == "auto"


def test_cli_int8_keeps_standard_output_for_the_results(tmp_path, capsys):
    """NNCF's progress bars go to standard error; standard output holds the command's own lines only."""
    pytest.importorskip("nncf")
    from rtsal.cli import main

    src = tmp_path / "in.png"
    import cv2
    from helpers import photo

    cv2.imwrite(str(src), cv2.cvtColor(photo("coffee"), cv2.COLOR_RGB2BGR))
    code = main(["image", str(src), "-o", str(tmp_path / "out"), "--model", "resnet18", "--weights", "none",
                 "--size", "64", "--backend", "openvino", "--precision", "int8",
                 "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0
    assert "━" not in out and "Statistics collection" not in out
    assert out.splitlines()[0].startswith("in.png: ")
