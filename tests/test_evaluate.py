"""Faithfulness metrics (rtsal.eval.metrics) and the `rtsal eval` command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rtsal.cli import main
from rtsal.commands.eval import DATA, parse_methods
from rtsal.errors import UsageError
from rtsal.eval import metrics as ev

H, W = 64, 64
BOX = (20, 16, 44, 40)  # x0, y0, x1, y1 of the region the synthetic class looks at


def region_mask() -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[BOX[1] : BOX[3], BOX[0] : BOX[2]] = True
    return m


class RegionModel(nn.Module):
    """Two classes. Class 0's logit is the mean energy of the pixels inside the box and nothing else; class
    1's is the energy outside it plus a bias towards class 0, so removing detail outside the box can raise
    the probability of class 0 (which the increase-in-confidence metric needs) and removing it inside
    always lowers it."""

    def __init__(self, mask: torch.Tensor, bias: float = -2.0) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = (x**2).mean(dim=1)
        inside = (e * self.mask).sum((1, 2)) / self.mask.sum()
        outside = (e * (1 - self.mask)).sum((1, 2)) / (1 - self.mask).sum()
        return torch.stack([inside, outside + self.bias], dim=1)


def contrast_image(seed: int, inside: float = 2.0, outside: float = 1.0) -> torch.Tensor:
    """Noise texture, stronger inside the box: (1, 3, H, W)."""
    noise = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(seed))
    return noise * torch.where(region_mask(), inside, outside)


def textured_images(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Noise textures with a different contrast inside and outside the box, (1, 3, H, W) each."""
    g = torch.Generator().manual_seed(seed)
    mask = region_mask()
    out = []
    for _ in range(n):
        a_in, a_out = 0.8 + 0.8 * torch.rand(2, generator=g)
        out.append(torch.randn(1, 3, H, W, generator=g) * torch.where(mask, a_in, a_out))
    return out


def test_ideal_map_beats_random_and_inverted_map_loses_on_every_metric():
    mask = region_mask()
    model = RegionModel(mask)
    names = ("ideal", "random", "inverted")
    scores: dict[str, dict[str, list[float]]] = {k: {} for k in names}
    for i, x in enumerate(textured_images(12)):
        assert int(model(x).argmax()) == 0
        base = ev.blur_baseline(x)
        maps = torch.stack([mask.float(), ev.random_map((H, W), seed=i), 1 - mask.float()])
        c = ev.deletion_insertion(model, x, base, maps, target=0, steps=20, batch_size=16)
        drop, inc = ev.confidence_change(model, x, base, maps, target=0)
        hits = ev.pointing_hit(maps, BOX)
        ins, dele = ev.auc(c.insertion), ev.auc(c.deletion)
        for j, k in enumerate(names):
            for metric, v in (("insertion", ins[j]), ("deletion", -dele[j]), ("ins-del", ins[j] - dele[j]),
                              ("drop", -drop[j]), ("increase", inc[j]), ("pointing", hits[j])):
                scores[k].setdefault(metric, []).append(float(v))  # higher is better everywhere
    mean = {k: {m: sum(v) / len(v) for m, v in s.items()} for k, s in scores.items()}
    for metric in mean["ideal"]:
        assert mean["ideal"][metric] > mean["random"][metric] > mean["inverted"][metric], (metric, mean)
    assert mean["ideal"]["drop"] == 0.0
    assert mean["ideal"]["increase"] == 1.0 and mean["ideal"]["pointing"] == 1.0
    assert mean["inverted"]["increase"] == 0.0 and mean["inverted"]["pointing"] == 0.0


def test_curves_start_and_end_at_the_image_and_the_baseline():
    model = RegionModel(region_mask(), bias=0.0)
    x = contrast_image(seed=3)
    base = ev.blur_baseline(x)
    maps = torch.stack([ev.random_map((H, W), seed=1), ev.centre_map((H, W)), torch.zeros(H, W)])
    c = ev.deletion_insertion(model, x, base, maps, target=0, steps=10, batch_size=7)
    p_image, p_base = ev.class_probability(model, torch.cat([x, base]), 0).tolist()
    assert abs(p_image - p_base) > 0.05  # the two ends differ, so a swapped curve would fail
    assert c.deletion.shape == c.insertion.shape == (3, 11)
    torch.testing.assert_close(c.deletion[:, 0], torch.full((3,), p_image))
    torch.testing.assert_close(c.deletion[:, -1], torch.full((3,), p_base))
    torch.testing.assert_close(c.insertion[:, 0], torch.full((3,), p_base))
    torch.testing.assert_close(c.insertion[:, -1], torch.full((3,), p_image))
    torch.testing.assert_close(c.fractions, torch.linspace(0, 1, 11), atol=1 / (H * W), rtol=0)


class KeptFraction(nn.Module):
    """Class 0's logit is 8 x the fraction of pixels still equal to 1 (image = ones, baseline = zeros)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = (x[:, 0] == 1).float().mean(dim=(1, 2))
        return torch.stack([8 * kept, torch.zeros_like(kept)], dim=1)


def test_each_step_removes_and_reveals_exactly_its_share_of_pixels():
    x, base = torch.ones(1, 3, 30, 40), torch.zeros(1, 3, 30, 40)
    maps = torch.rand(2, 30, 40, generator=torch.Generator().manual_seed(0))
    c = ev.deletion_insertion(KeptFraction(), x, base, maps, target=0, steps=8)
    kept = torch.round(torch.arange(9) / 8 * 1200) / 1200
    torch.testing.assert_close(c.deletion, torch.sigmoid(8 * (1 - kept)).expand(2, -1))
    torch.testing.assert_close(c.insertion, torch.sigmoid(8 * kept).expand(2, -1))
    assert abs(float(ev.auc(torch.linspace(1, 0, 21))) - 0.5) < 1e-6


def test_the_most_salient_pixels_go_first():
    model = RegionModel(region_mask(), bias=0.0)
    x = contrast_image(seed=5)
    base = ev.blur_baseline(x)
    c = ev.deletion_insertion(model, x, base, region_mask().float(), target=0, steps=20)
    share = region_mask().float().mean().item()  # 14% of the pixels: gone after 3 of 20 steps
    k = math.ceil(share * 20)
    p_inside_gone = float(ev.class_probability(model, torch.where(region_mask(), base, x), 0)[0])
    assert abs(float(c.deletion[0, k]) - p_inside_gone) < 0.02
    assert float(c.deletion[0, k]) < float(c.deletion[0, 0]) - 0.2


def test_baselines_are_seeded_and_reproducible():
    a, b = ev.random_map((50, 70), seed=4), ev.random_map((50, 70), seed=4)
    assert torch.equal(a, b) and a.shape == (50, 70)
    assert not torch.equal(a, ev.random_map((50, 70), seed=5))
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0
    assert torch.equal(ev.random_map((9, 9), 1, grid=None), ev.random_map((9, 9), 1, grid=None))
    c = ev.centre_map((51, 71))
    assert torch.equal(c, ev.centre_map((51, 71)))
    assert int(c.argmax()) == 25 * 71 + 35 and abs(float(c.max()) - 1.0) < 1e-3
    torch.testing.assert_close(c, c.flip(0))
    torch.testing.assert_close(c, c.flip(1))
    # ties are broken in a seeded random order, not raster order
    flat = torch.zeros(1, 20, 20)
    r1, r2 = ev.saliency_rank(flat, seed=0), ev.saliency_rank(flat, seed=0)
    assert torch.equal(r1, r2) and not torch.equal(r1, ev.saliency_rank(flat, seed=1))
    assert sorted(r1.flatten().tolist()) == list(range(400))
    assert int(r1[0, :10].float().mean()) > 50  # the top rows are not all removed first


def test_keep_blur_pointing_and_intervals():
    x, base = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    kept = ev.keep_salient(x, base, torch.stack([torch.ones(16, 16), torch.zeros(16, 16)]))
    torch.testing.assert_close(kept[0], x[0])
    torch.testing.assert_close(kept[1], base[0])
    flat = torch.full((1, 3, 40, 40), 0.7)
    torch.testing.assert_close(ev.gaussian_blur(flat, 4.0), flat)
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert float(ev.blur_baseline(noise).std()) < 0.15 * float(noise.std())
    peak = torch.zeros(2, 40, 60)
    peak[0, 10, 30] = 1.0
    peak[1, 35, 5] = 1.0
    assert ev.pointing_hit(peak, (25, 5, 40, 20)).tolist() == [True, False]
    assert ev.pointing_hit(peak, (10, 30, 20, 40), tolerance=6).tolist() == [False, True]
    mean, half = ev.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and abs(half - 3.182 * math.sqrt(5 / 3) / 2) < 1e-9
    assert math.isnan(ev.mean_ci([1.0])[1])
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 7, 29, 31, 60, 200):
        assert abs(ev.t_quantile(df) - scipy_stats.t.ppf(0.975, df)) < 2e-3


def test_on_a_real_photo_gradcam_beats_its_inverse(lite0, coffee):
    x = lite0.preprocess(coffee)
    r = lite0.explain(x)
    cam = r.cam[0]
    t = int(r.target[0])
    c = ev.deletion_insertion(lambda b: lite0.forward(b)[0], x, ev.blur_baseline(x),
                              torch.stack([cam, 1 - cam]), t, steps=10, batch_size=11)
    score = ev.auc(c.insertion) - ev.auc(c.deletion)
    assert float(score[0]) > float(score[1]) + 0.2
    assert abs(float(c.deletion[0, 0]) - float(r.topk.probs[0, 0])) < 1e-4


def test_method_names_parse_to_canonical_rows():
    rows = [s.label for s in parse_methods("fastcam,smoe/gamma/linear,fastcam/gradcampp,gradcam")]
    assert rows == ["fastcam", "smoe/gamma/linear", "gradcam", "random", "centre"]
    spec = parse_methods("smoe/entropy")[0]
    assert (spec.method, spec.statistic, spec.norm) == ("smoe", "entropy", "gauss")
    assert parse_methods("gradcam")[0].cam == "gradcam"
    assert len(parse_methods("engine")) == 14 + 2
    for bad in ("nosuch", "gradcam/gamma", "smoe/gradcam", "fastcam/blue", "random/linear", ","):
        with pytest.raises(UsageError):
            parse_methods(bad)


def test_cli_scores_two_photos(tmp_path, capsys):
    out_json, out_png = tmp_path / "eval.json", tmp_path / "curves.png"
    photos = [str(DATA / "coffee.jpg"), str(DATA / "eval" / "camera.jpg")]
    rc = main(["eval", *photos, "--methods", "fastcam,gradcam", "--size", "96", "--steps", "4",
               "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    for row in ("fastcam", "gradcam", "random", "centre"):
        assert any(line.startswith(row + " ") for line in text.splitlines()), text
    report = json.loads(out_json.read_text())
    assert report["images"] == ["coffee.jpg", "camera.jpg"]
    assert list(report["methods"]) == ["fastcam", "gradcam", "random", "centre"]
    for m in report["methods"].values():
        assert len(m["insertion"]["values"]) == 2 and 0 <= m["insertion"]["mean"] <= 1
        assert m["pointing"]["n"] == 2  # both photos have a bundled box
        torch.testing.assert_close(torch.tensor(m["curves"]["deletion"][0]),
                                   torch.tensor(sum(report["probability"]) / 2))
        assert abs(m["ins_minus_del"]["mean"] - (m["insertion"]["mean"] - m["deletion"]["mean"])) < 1e-6
    assert out_png.stat().st_size > 10_000
    assert report["methods"]["random"]["paired"]["mean"] is None  # the row it is compared against
    fc = report["methods"]["fastcam"]
    rnd = report["methods"]["random"]["ins_minus_del"]["values"]
    diff = [a - b for a, b in zip(fc["ins_minus_del"]["values"], rnd, strict=True)]
    assert abs(fc["paired"]["mean"] - sum(diff) / 2) < 1e-9
    assert fc["paired"]["wins"] == sum(d > 0 for d in diff)


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["eval", "missing.jpg"], 1, "no such file"),
        (["eval", "--methods", "nosuch"], 2, "unknown method"),
        (["eval", "--methods", "gradcam/gamma"], 2, "does not change"),
        (["eval", "--steps", "1"], 2, "--steps"),
        (["eval", "--methods", "fastcam", "--against", "gradcam"], 2, "--against"),
        (["eval", "--json", "/nonexistent/dir/x.json"], 1, "--json"),
    ],
)
def test_cli_bad_input_is_one_line(argv, code, words, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
