"""The compiled backend built from a FastCAMSpec and a module alone (no Explainer), and without a compiler.

One real AOTInductor build of a tiny seeded CNN (seconds to a minute on a loaded CPU); the rest needs none.
"""

from __future__ import annotations

import copy
import json
import shutil

import torch
from helpers import hook_count
from torch import nn

from rtsal.engine.backends.compiled import CompiledBackend, cache_key
from rtsal.engine.explainer import Explainer
from rtsal.engine.result import assemble
from rtsal.engine.spec import FastCAMSpec, weights_hash

SIZE = (32, 48)
LAYERS = ("features.1", "features.3", "features.5")


class Tiny(nn.Module):
    """Three strided convolutions with ReLUs, average pool, linear head (a closed-form CAM)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _spec(model: nn.Module, batch: int) -> FastCAMSpec:
    """The spec written by hand: what the graph computes, without any Explainer."""
    return FastCAMSpec(
        model="tiny", model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        weights=weights_hash(model), layers=tuple((name, 0, False) for name in LAYERS), head_layer="fc",
        layer_weights=(1.0, 2.0, 3.0), channels_last=False,
    ).for_input((batch, 3, *SIZE))


def test_compiled_backend_from_a_spec_alone_gives_the_eager_maps(tmp_path):
    torch.manual_seed(0)
    model = Tiny().eval()
    spec = _spec(model, 2)
    backend = CompiledBackend(spec, model, cache_dir=tmp_path)
    try:
        assert backend.source == "built" and hook_count(model) == 0  # built on a copy
        (package,) = tmp_path.glob("*.pt2")
        record = json.loads(package.with_suffix(".json").read_text())
        assert record["spec"]["spec"] == spec.to_dict()  # the spec is the entry's key and record
        torch.manual_seed(1)
        x = torch.randn(2, 3, *SIZE)
        target = torch.tensor([-1, 7])  # top-1 for the first image, class 7 for the second
        out = backend.run(x, target)
        weights = torch.tensor(spec.layer_weights) / sum(spec.layer_weights)
        with Explainer(copy.deepcopy(model), size=SIZE, layers=list(LAYERS), layer_weights=[1, 2, 3],
                       channels_last=False) as ex:
            assert ex.spec.layers == spec.layers and ex.spec.weights == spec.weights  # the same graph
            ref = ex.explain(x, target=[int(out.target[0]), 7], size="model")
            got = assemble("fastcam", out.logits, out.target, out.cam_small, out.maps, SIZE, weights,
                           ex.class_names, 5, ref.layers)
        assert int(out.target[1]) == 7 and int(out.target[0]) == int(ref.logits[0].argmax())
        torch.testing.assert_close(got.logits, ref.logits, rtol=1e-4, atol=1e-4)
        for name in ("scales", "smoe", "cam", "fused", "nonclass"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-3, atol=1e-4)
        again = CompiledBackend(spec, model, cache_dir=tmp_path)  # the same spec: the cached package
        assert again.source == "cache"
        torch.testing.assert_close(again.run(x, target).maps[0], out.maps[0])
        again.close()
        assert cache_key(spec)["spec"] == spec.to_dict()
        assert cache_key(spec) != cache_key(spec.for_input((1, 3, *SIZE)))  # a package per input shape
    finally:
        backend.close()


def test_no_cxx_compiler_falls_back_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    torch.manual_seed(0)
    model = Tiny().eval()
    with Explainer(model, size=SIZE, backend="compiled", cache_dir=tmp_path / "c") as ex:
        r1, r2 = ex.explain(torch.zeros(1, 3, *SIZE)), ex.explain(torch.zeros(1, 3, *SIZE))
        assert r1.engine == r2.engine == "eager (fallback)" and torch.isfinite(r1.fused).all()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no C++ compiler" in err[0] and "eager" in err[0], err
    assert hook_count(model) == 0


def test_compiled_backend_times_its_own_plain_model(tmp_path):
    """The HUD's base on the compiled backend: the plain model compiled by AOTInductor with the same settings,
    cached beside the explained graph, timed once after the build (``timings["plain"]``)."""
    from rtsal.engine.backends.compiled import plain_key
    from rtsal.engine.cache import Cache

    torch.manual_seed(0)
    model = Tiny().eval()
    spec = _spec(model, 1)
    backend = CompiledBackend(spec, model, cache_dir=tmp_path)
    try:
        x = torch.randn(1, 3, *SIZE)
        assert backend.plain()(x) is None
        assert Cache(tmp_path).lookup(plain_key(spec)) is not None  # cached apart from the explained graph
        assert plain_key(spec) != cache_key(spec)
        (logits,) = backend._plain(x, torch.full((1,), -1))
        with torch.no_grad():
            torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    finally:
        backend.close()
    with Explainer(model, size=SIZE, backend="compiled", cache_dir=tmp_path / "e") as ex:
        result = ex.explain(torch.zeros(1, 3, *SIZE))
        assert result.engine == "compiled"
        assert result.timings["plain"] > 0  # the same runtime's plain forward, not eager PyTorch's
