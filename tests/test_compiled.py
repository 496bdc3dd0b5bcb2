"""The compiled engine agrees with the eager one, falls back when it cannot compile, and its cache is safe.

One real AOTInductor build of a seeded ResNet-18 (batch 2, 64x80 input) is shared by the module, plus one
tiny build of the SMOE statistic; every other test reuses them or simulates a compiler failure. The builds
take tens of seconds on a loaded CPU, hence ``slow``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from helpers import all_photos, hook_count, maps_agree, photo
from torch import nn

from rtsal.cli import main
from rtsal.engine.backends import compiled as compiled_mod
from rtsal.engine.backends.compiled import cache_key
from rtsal.engine.cache import Cache, CacheError, spec_key
from rtsal.engine.explainer import Explainer
from rtsal.engine.saliency.smoe import smoe_scale, smoe_scale_fastlog
from rtsal.errors import UsageError

SIZE = (64, 80)  # the model's input (h, w)
FRAME = (120, 150)  # the frames' (H, W): the maps come back at this size
KEY = (2, 3, *SIZE)  # the one graph the module builds (every output size shares it)
MAPS = ("scales", "smoe", "cam", "fused", "nonclass")


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()



@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A fresh cache folder; RTSAL_TEST_CACHE_DIR keeps one across runs (the build then comes from it)."""
    kept = os.environ.get("RTSAL_TEST_CACHE_DIR")
    return Path(kept) if kept else tmp_path_factory.mktemp("rtsal-cache") / "cache"


@pytest.fixture(scope="module")
def pair(cache_dir):
    """(compiled, eager) explainers over the same weights; the compiled one built its graph for
    (2, 3, 64, 80) inputs and maps of 120x150."""
    model = _resnet18()
    eager = Explainer(copy.deepcopy(model), size=SIZE)
    comp = Explainer(model, size=SIZE, compile=True, cache_dir=cache_dir)
    first = comp.explain(_frames(photo("coffee"), photo("coffee")))
    assert first.engine == "compiled", "the graph did not build (see stderr)"
    yield comp, eager
    comp.close()
    eager.close()


def _frames(*images: np.ndarray) -> np.ndarray:
    """Photos resized to FRAME, as one uint8 batch (N, H, W, 3)."""
    return np.stack([cv2.resize(im, FRAME[::-1], interpolation=cv2.INTER_AREA) for im in images])





@pytest.mark.slow
def test_every_bundled_photo_same_top1_and_maps(pair):
    comp, eager = pair
    photos = all_photos()
    assert len(photos) >= 8
    if len(photos) % 2:
        photos.append(photos[0])
    for i in range(0, len(photos), 2):
        x = _frames(photos[i], photos[i + 1])
        rc, re = comp.explain(x), eager.explain(x)
        assert rc.fused.shape == (2, *FRAME)  # height first
        assert rc.engine == "compiled" and re.engine == "eager"
        assert torch.equal(rc.topk.indices[:, 0], re.topk.indices[:, 0])
        assert torch.equal(rc.target, re.target)
        assert torch.allclose(rc.topk.probs, re.topk.probs, atol=1e-4)
        assert rc.topk.labels == re.topk.labels
        for name in MAPS:
            maps_agree(getattr(rc, name), getattr(re, name))


@pytest.mark.slow
def test_explicit_targets(pair):
    comp, eager = pair
    x = _frames(photo("chelsea"), photo("rocket"))
    for target in (3, [7, 281], torch.tensor([1, 2])):
        rc, re = comp.explain(x, target=target), eager.explain(x, target=target)
        assert rc.engine == "compiled"  # (a broadcast target once reached the graph with stride 0)
        assert torch.equal(rc.target, re.target)
        for name in MAPS:
            maps_agree(getattr(rc, name), getattr(re, name))
    with pytest.raises(UsageError):
        comp.explain(x, target=1000)
    with pytest.raises(UsageError):
        comp.explain(x, target=[1, 2, 3])


@pytest.mark.slow
def test_other_shapes_stay_eager_until_built(pair, monkeypatch):
    comp, _ = pair
    calls = []
    monkeypatch.setattr(compiled_mod, "build_package", lambda *a, **k: calls.append(a) or 1 / 0)
    r = comp.explain(comp.preprocess(photo("coffee")))  # batch 1: another graph, whose build fails here
    assert r.engine == "eager (fallback)" and len(calls) == 1
    assert comp.explain(_frames(photo("coffee"), photo("rocket"))).engine == "compiled"


@pytest.mark.slow
def test_one_graph_serves_every_output_size(pair, monkeypatch):
    comp, eager = pair
    monkeypatch.setattr(compiled_mod, "build_package", lambda *a, **k: pytest.fail("built a second graph"))
    frames = _frames(photo("chelsea"), photo("rocket"))
    for size in (None, "model", (33, 250)):  # the frames' size, the model input's, any other
        r, e = comp.explain(frames, size=size), eager.explain(frames, size=size)
        assert r.engine == "compiled" and r.fused.shape == e.fused.shape
        maps_agree(r.fused, e.fused)


@pytest.mark.slow
def test_warm_cache_loads_without_building(pair, cache_dir, monkeypatch):
    comp, eager = pair
    monkeypatch.setattr(compiled_mod, "build_package", lambda *a, **k: pytest.fail("rebuilt a cached graph"))
    twin = _resnet18()
    with Explainer(twin, size=SIZE, compile=True, cache_dir=cache_dir) as again:
        x = _frames(photo("astronaut"), photo("coffee"))
        r = again.explain(x)
        assert r.engine == "compiled"
        assert again._compiled.source[KEY] == "cache"
        assert torch.equal(r.fused, comp.explain(x).fused)
    assert hook_count(twin) == 0
    assert oct(os.stat(cache_dir).st_mode & 0o777) == "0o700"


@pytest.mark.slow
def test_background_serves_eager_then_switches_in_order(pair, cache_dir):
    comp, _ = pair
    frames = _frames(photo("rocket"), photo("chelsea"))
    with Explainer(_resnet18(), size=SIZE, compile="background", cache_dir=cache_dir) as bg:
        engines = []
        for _ in range(400):  # every call returns its own result: nothing waits, nothing is dropped
            r = bg.explain(frames)
            engines.append(r.engine)
            if r.engine == "compiled":
                break
            bg._compiled.wait(0.05)
        assert engines[0] == "eager (compiling)"  # the first frame never waits for the graph
        assert engines[-1] == "compiled", engines[-3:]
        assert set(engines[:-1]) == {"eager (compiling)"}
        assert bg._compiled.source[KEY] == "cache"
        assert torch.equal(bg.explain(frames).fused, comp.explain(frames).fused)


@pytest.mark.slow
def test_corrupt_foreign_or_other_torch_entries_are_not_loaded(pair, cache_dir, tmp_path, monkeypatch):
    comp, _ = pair
    spec = cache_key(comp.spec.for_input(KEY))
    good = Cache(cache_dir)
    package, record = good.paths(spec_key(spec))
    assert good.lookup(spec) == package

    def fresh() -> Cache:
        folder = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        folder.mkdir(mode=0o700)
        shutil.copy(package, folder / package.name)
        shutil.copy(record, folder / record.name)
        return Cache(folder)

    flipped = fresh()  # one byte changed in the package
    data = bytearray(flipped.paths(spec_key(spec))[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.paths(spec_key(spec))[0].write_bytes(bytes(data))
    truncated = fresh()
    p = truncated.paths(spec_key(spec))[0]
    p.write_bytes(p.read_bytes()[:1000])
    foreign = fresh()  # a record that does not describe this spec (e.g. another torch version)
    r = foreign.paths(spec_key(spec))[1]
    meta = json.loads(r.read_text())
    meta["spec"]["torch"] = "0.0.1"
    r.write_text(json.dumps(meta))
    garbage = fresh()
    garbage.paths(spec_key(spec))[1].write_text("{not json")
    for cache in (flipped, truncated, foreign, garbage):
        assert cache.lookup(spec) is None
        assert not any(cache.paths(spec_key(spec))[i].exists() for i in (0, 1))  # removed, to be rebuilt

    # the explainer ignores the corrupt entry and rebuilds (the rebuild is simulated to fail here)
    corrupt = fresh()
    pkg = corrupt.paths(spec_key(spec))[0]
    pkg.write_bytes(pkg.read_bytes()[:-10] + b"0123456789")
    built = []
    monkeypatch.setattr(compiled_mod, "build_package", lambda *a, **k: built.append(a) or 1 / 0)
    with Explainer(_resnet18(), size=SIZE, compile=True, cache_dir=corrupt.root) as ex:
        assert ex.explain(np.zeros((2, *FRAME, 3), np.uint8)).engine == "eager (fallback)"
    assert len(built) == 1


def test_compiler_failure_falls_back_with_one_line(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(compiled_mod, "build_package", broken)
    model = _resnet18()
    with Explainer(model, size=SIZE, compile=True, cache_dir=tmp_path / "c") as ex:
        x = ex.preprocess(photo("coffee"))
        r1, r2 = ex.explain(x), ex.explain(x)
        assert r1.engine == r2.engine == "eager (fallback)"
        assert r1.fused.shape == (1, *SIZE) and torch.isfinite(r1.fused).all()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no working C++ compiler" in err[0] and "eager" in err[0]
    assert hook_count(model) == 0
    assert list((tmp_path / "c").iterdir()) == []  # no half-written entry left behind


def test_unsafe_cache_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(CacheError):
        Cache(folder).ensure()
    with Explainer(_resnet18(), size=SIZE, compile=True, cache_dir=folder) as ex:
        assert ex.explain(torch.zeros(1, 3, *SIZE)).engine == "eager (fallback)"
    assert "writable by others" in capsys.readouterr().err


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("RTSAL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Cache().root == tmp_path / "xdg" / "rtsal"
    monkeypatch.setenv("RTSAL_CACHE_DIR", str(tmp_path / "mine"))
    assert Cache().root == tmp_path / "mine"
    assert Cache(tmp_path / "flag").root == tmp_path / "flag"
    Cache().ensure()
    assert oct(os.stat(tmp_path / "mine").st_mode & 0o777) == "0o700"


@pytest.mark.slow
def test_cache_command_lists_and_clears(pair, cache_dir, tmp_path, capsys):
    folder = tmp_path / "listed"
    shutil.copytree(cache_dir, folder)
    assert main(["cache", "--cache-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    # the explained graph and the plain model it is timed against (the HUD's base)
    assert "2 entries" in out and "2x3x64x80  fastcam" in out and "2x3x64x80  plain" in out and "MiB" in out
    assert main(["cache", "--cache-dir", str(folder), "--clear"]) == 0
    assert list(folder.iterdir()) == []
    assert main(["cache", "--cache-dir", str(folder)]) == 0
    assert "0 entries" in capsys.readouterr().out


@pytest.mark.slow
def test_hooks_gone_after_close(pair):
    comp, _ = pair
    from rtsal.engine.backends.common import graph_of
    from rtsal.engine.graph import clean_copy

    # the build copy carries the graph's hooks, not the engine's
    graph = graph_of(comp.spec.for_input(KEY), clean_copy(comp.model), "compiled")
    try:
        own = {h.id for h in comp._recorder._handles}
        copied = {k for m in graph.model.modules() for k in (*m._forward_hooks, *m._forward_pre_hooks)}
        assert copied and not (own & copied)
    finally:
        graph.close()
    assert hook_count(graph.model) == 0


class _Statistic(nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return smoe_scale_fastlog(a)


@pytest.mark.slow
def test_table3_vectors_on_both_paths(tmp_path):
    """Paper appendix, Table 3: 64 channels alternating two values."""
    pairs = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.0, 3.0)]
    expected = torch.tensor([0.064, 0.127, 0.255, 0.074])
    a = torch.tensor([[v0 if c % 2 == 0 else v1 for c in range(64)] for v0, v1 in pairs]).view(4, 64, 1, 1)
    from torch._inductor import aoti_compile_and_package, aoti_load_package

    with torch.inference_mode():
        ep = torch.export.export(_Statistic(), (a,), strict=False)
    run = aoti_load_package(aoti_compile_and_package(ep, package_path=str(tmp_path / "stat.pt2")))
    for values in (smoe_scale(a), run(a)):
        assert torch.allclose(values.flatten(), expected, atol=1e-3)


def test_compile_defaults_per_command(monkeypatch, tmp_path):
    from rtsal.cli import build_parser
    from rtsal.commands.common import compile_setting

    monkeypatch.delenv("RTSAL_COMPILE", raising=False)
    parser = build_parser()

    def setting(*argv: str) -> bool | str:
        return compile_setting(parser.parse_args(list(argv)))

    assert setting("video", "in.mp4", "-o", "out.mp4") == "background"
    assert setting("webcam") == "background"
    assert setting("demo") == "background"
    assert setting("video", "in.mp4", "-o", "out.mp4", "--no-compile") is False
    assert setting("video", "in.mp4", "-o", "out.mp4", "--method", "scorecam") is False  # its own passes
    assert setting("image", "a.jpg", "-o", str(tmp_path)) is False
    assert setting("image", "a.jpg", "-o", str(tmp_path), "--compile") is True  # built before the first image
    args = parser.parse_args(["image", "a.jpg", "-o", str(tmp_path), "--cache-dir", str(tmp_path / "c")])
    assert args.cache_dir == str(tmp_path / "c")
    monkeypatch.setenv("RTSAL_COMPILE", "0")
    assert compile_setting(build_parser().parse_args(["webcam"])) is False


def test_hud_says_which_engine_drew_the_frame():
    from rtsal.render.hud import HudInfo

    base = dict(fps=30.0, latency_ms=20.0, forward_ms=10.0, saliency_ms=1.0, dropped=0, method="fastcam",
                cost="1 forward")
    assert "compiling" in HudInfo(**base, engine="eager (compiling)").lines()[2]
    assert "compiled" in HudInfo(**base, engine="compiled").lines()[2]
    assert HudInfo(**base).lines()[2] == "fastcam [1 forward]"


TINY = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


torch.manual_seed(0)
model = Tiny().eval()
"""

WARM = TINY + """
import sys
import numpy as np
from rtsal.engine.explainer import Explainer
with Explainer(model, size=32, compile=True, cache_dir=sys.argv[1]) as ex:
    r = ex.explain(np.zeros((40, 40, 3), np.uint8))
print(r.engine, ex._compiled.source, sorted(m for m in ("torch._inductor", "torchvision", "torch._dynamo")
                                            if m in sys.modules))
"""


@pytest.mark.slow
def test_a_warm_start_loads_the_graph_without_importing_the_compiler(tmp_path):
    """Loading a cached graph needs neither torch._inductor nor torchvision (each costs seconds of start-up,
    measured); a second process finds the entry the first one wrote."""
    import subprocess
    import sys

    ns: dict = {"__name__": "tinynet"}
    exec(TINY, ns)
    with Explainer(ns["model"], size=32, compile=True, cache_dir=tmp_path) as ex:
        assert ex.explain(np.zeros((40, 40, 3), np.uint8)).engine == "compiled"
    code = WARM.replace("import torch\n", "import torch\n__name__ = 'tinynet'\n", 1)
    cmd = [sys.executable, "-c", code, str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.split()[0] == "compiled"
    assert "'cache'" in out.stdout and out.stdout.rstrip().endswith("[]"), out.stdout
