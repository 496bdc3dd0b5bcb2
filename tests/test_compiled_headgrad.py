"""The compiled engine for heads without a closed-form CAM: the head's gradient is traced into the graph.

Two real AOTInductor builds, each shared by its tests: a seeded MobileNetV3-Small (batch 2, 64x80 input,
maps at 120x150) and a tiny ConvNeXt from torchvision's own class (LayerNorm -> linear head; batch 1). VGG is
left out: its 100 M-parameter head makes a build far longer than a test may take. Each is compared with the
eager engine, which takes the head's gradient by autograd. The builds take tens of seconds on a loaded CPU,
hence ``slow``; the trace of the head, the cache key and the fallback are checked without a build.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from helpers import all_photos, hook_count, maps_agree, photo
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from rtsal.engine.cache import spec_key
from rtsal.engine.explainer import Explainer
from rtsal.engine.graph import HeadError, clean_copy, trace_head_grad

SIZE = (64, 80)  # the model's input (h, w)
FRAME = (120, 150)  # the frames' (H, W): the maps come back at this size
KEY = (2, 3, *SIZE)  # the one graph the module builds (every output size shares it)
MAPS = ("scales", "smoe", "cam", "fused", "nonclass")



def _frames(*images: np.ndarray, size: tuple[int, int] = FRAME) -> np.ndarray:
    return np.stack([cv2.resize(im, size[::-1], interpolation=cv2.INTER_AREA) for im in images])





def _same(rc, re) -> None:
    assert rc.engine == "compiled" and re.engine == "eager"
    assert torch.equal(rc.topk.indices[:, 0], re.topk.indices[:, 0])
    assert torch.equal(rc.target, re.target)
    assert torch.allclose(rc.topk.probs, re.topk.probs, atol=1e-4)
    for name in MAPS:
        maps_agree(getattr(rc, name), getattr(re, name))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    kept = os.environ.get("RTSAL_TEST_CACHE_DIR")
    return Path(kept) if kept else tmp_path_factory.mktemp("rtsal-cache-headgrad") / "cache"


def _mobilenet(**kwargs) -> Explainer:
    torch.manual_seed(0)  # the same random weights every time
    return Explainer("mobilenet_v3_small", weights=None, size=SIZE, **kwargs)


@pytest.fixture(scope="module")
def mobilenet(cache_dir):
    """(compiled, eager) MobileNetV3-Small explainers over the same weights; the graph is built for KEY."""
    comp, eager = _mobilenet(compile=True, cache_dir=cache_dir), _mobilenet()
    assert not comp.closed_form
    first = comp.explain(_frames(photo("coffee"), photo("coffee")))
    assert first.engine == "compiled", "the graph did not build (see stderr)"
    yield comp, eager
    comp.close()
    eager.close()
    assert hook_count(comp.model) == 0 and hook_count(eager.model) == 0


@pytest.mark.slow
def test_mobilenet_every_bundled_photo_same_top1_and_maps(mobilenet):
    comp, eager = mobilenet
    photos = all_photos()
    if len(photos) % 2:
        photos.append(photos[0])
    for i in range(0, len(photos), 2):
        x = _frames(photos[i], photos[i + 1])
        rc, re = comp.explain(x), eager.explain(x)
        assert rc.fused.shape == (2, *FRAME)
        _same(rc, re)


@pytest.mark.slow
def test_mobilenet_explicit_targets_and_both_cams(mobilenet):
    comp, eager = mobilenet
    x = _frames(photo("chelsea"), photo("rocket"))
    for target in (3, [7, 281], torch.tensor([1, 2])):
        _same(comp.explain(x, target=target), eager.explain(x, target=target))
    # gradcam is another graph (the graph holds one CAM): served eagerly, never a wrong map
    assert comp.explain(x, method="gradcam").engine != "compiled"


@pytest.mark.slow
def test_mobilenet_background_loads_the_cached_graph(mobilenet, cache_dir):
    comp, _ = mobilenet
    frames = _frames(photo("rocket"), photo("chelsea"))
    with _mobilenet(compile="background", cache_dir=cache_dir) as bg:
        engines = []
        for _ in range(400):
            r = bg.explain(frames)
            engines.append(r.engine)
            if r.engine == "compiled":
                break
            bg._compiled.wait(0.05)
        assert engines[0] == "eager (compiling)" and engines[-1] == "compiled", engines[-3:]
        assert bg._compiled.source[KEY] == "cache"
        assert torch.equal(bg.explain(frames).fused, comp.explain(frames).fused)


@pytest.fixture(scope="module")
def convnext(cache_dir):
    """(compiled, eager) explainers over a tiny ConvNeXt (LayerNorm2d -> flatten -> linear head), batch 1."""
    torch.manual_seed(1)
    blocks = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 48, 1), CNBlockConfig(48, 64, 1),
              CNBlockConfig(64, None, 1)]
    model = ConvNeXt(blocks, num_classes=10).eval()
    eager = Explainer(copy.deepcopy(model), size=(64, 96))
    comp = Explainer(model, size=(64, 96), compile=True, cache_dir=cache_dir)
    assert not comp.closed_form
    yield comp, eager
    comp.close()
    eager.close()
    assert hook_count(model) == 0


@pytest.mark.slow
def test_convnext_same_top1_and_maps(convnext):
    comp, eager = convnext
    for name in ("coffee", "chelsea", "astronaut"):
        x = _frames(photo(name), size=(90, 140))
        _same(comp.explain(x), eager.explain(x))
    x = _frames(photo("rocket"), size=(90, 140))
    _same(comp.explain(x, target=4), eager.explain(x, target=4))


class _MlpHead(nn.Module):
    """Two strided convolutions, then average pool -> linear -> ReLU -> linear: no closed-form CAM."""

    def __init__(self, skip: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(inplace=True))
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(inplace=True))
        self.skip = skip
        self.fc1 = nn.Linear(16 + (8 if skip else 0), 12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        a = self.stage(s).mean(dim=(2, 3))
        if self.skip:  # the head reads the stem too: its gradient cannot be separated from the trunk
            a = torch.cat([a, s.mean(dim=(2, 3))], dim=1)
        return self.fc2(torch.relu(self.fc1(a)))


def test_traced_head_gradient_equals_autograd():
    torch.manual_seed(0)
    with Explainer(_MlpHead(), size=(32, 48)) as ex:
        assert not ex.closed_form
        x = torch.randn(3, 3, 32, 48)
        model = clean_copy(ex.model)
        head = trace_head_grad(model, ex.layers[-1], x)
        assert hook_count(model) == 0
        # what the eager engine computes: autograd from the recorded last scale-end tensor
        logits, acts = ex.forward(x)
        target = torch.tensor([0, 4, 2])
        (g_ref,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), acts[-1])
        with torch.inference_mode():  # the traced graph needs no autograd
            g = head(acts[-1].detach(), target)
        assert g.shape == acts[-1].shape
        assert torch.allclose(g, g_ref, atol=1e-6)
        ops = {str(n.target) for n in head.graph.nodes if n.op == "call_function"}
        assert not any("convolution" in op for op in ops)  # the trunk is gone: only the head's ops
        assert "aten.index_select.default" in ops and "aten.scatter_add.default" not in ops  # W[target]
        assert sum(op in ("aten.addmm.default", "aten.mm.default") for op in ops) == 2  # fc1 fwd, fc1 bwd


def test_head_that_reads_the_trunk_falls_back_with_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    model = _MlpHead(skip=True).eval()
    with pytest.raises(HeadError):
        with Explainer(copy.deepcopy(model), size=(32, 48)) as ex:
            trace_head_grad(clean_copy(ex.model), ex.layers[-1], torch.randn(1, 3, 32, 48))
    capsys.readouterr()
    with Explainer(model, size=(32, 48), compile=True, cache_dir=tmp_path / "c") as ex:
        x = torch.randn(1, 3, 32, 48)
        r1, r2 = ex.explain(x), ex.explain(x)
        assert r1.engine == r2.engine == "eager (fallback)"
        assert torch.isfinite(r1.fused).all()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be separated" in err[0] and "eager" in err[0]
    assert hook_count(model) == 0
    assert list((tmp_path / "c").iterdir()) == []


def test_cache_key_names_the_head(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with Explainer(copy.deepcopy(model), size=SIZE, compile=True, cache_dir=tmp_path) as closed, \
            Explainer(model, size=SIZE, compile=True, cache_dir=tmp_path, head_autograd=True) as grad:
        from rtsal.engine.backends.compiled import cache_key

        a, b = cache_key(closed.spec.for_input(KEY)), cache_key(grad.spec.for_input(KEY))
        assert a["spec"]["head"] == "linear" and b["spec"]["head"] == "gradient"
        assert spec_key(a) != spec_key(b)  # the same weights and settings, another graph
