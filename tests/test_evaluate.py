"""Faithfulness evaluation: rtsal.eval (metrics, stats, inputs, methods, report) and `rtsal eval`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rtsal.cli import main
from rtsal.errors import UsageError
from rtsal.eval import metrics as ev
from rtsal.eval.inputs import DATA
from rtsal.eval.methods import parse_methods
from rtsal.eval.stats import mean_ci, t_quantile

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
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and abs(half - 3.182 * math.sqrt(5 / 3) / 2) < 1e-9
    assert math.isnan(mean_ci([1.0])[1])
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 7, 29, 31, 60, 200):
        assert abs(t_quantile(df) - scipy_stats.t.ppf(0.975, df)) < 2e-3


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


def test_cli_scores_photos_and_clip_frames(tmp_path, capsys):
    out_json, out_png = tmp_path / "eval.json", tmp_path / "curves.png"
    inputs = [str(DATA / "coffee.jpg"), str(DATA / "eval" / "camera.jpg"), str(DATA / "demo.mp4")]
    rc = main(["eval", *inputs, "--every", "120", "--methods", "fastcam,gradcampp", "--size", "64",
               "--steps", "4", "--baseline", "black", "--resamples", "500",
               "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    for row in ("fastcam", "gradcampp", "random", "centre"):
        assert any(line.startswith(row + " ") for line in text.splitlines()), text
    assert "2 photos + 2 frames of 1 clip" in text and "black substrate" in text
    report = json.loads(out_json.read_text())
    assert report["images"] == ["coffee.jpg", "camera.jpg", "demo.mp4#0", "demo.mp4#120"]
    frames = [(i["clip"], i["frame"]) for i in report["inputs"]]
    assert frames == [(None, None), (None, None), ("demo.mp4", 0), ("demo.mp4", 120)]
    assert report["settings"]["baseline"] == "black" and report["settings"]["headline"] == "n_ins_minus_del"
    assert list(report["methods"]) == ["fastcam", "gradcampp", "random", "centre"]
    p = torch.tensor(report["probability"], dtype=torch.float64)
    for m in report["methods"].values():
        assert len(m["insertion"]["values"]) == 4 and 0 <= m["insertion"]["mean"] <= 1
        assert m["pointing"]["n"] == 2  # both photos have a bundled box, the frames none
        torch.testing.assert_close(torch.tensor(m["curves"]["deletion"][0], dtype=torch.float64), p.mean())
        assert abs(m["curves"]["n_deletion"][0] - 1.0) < 1e-6  # every normalised deletion starts at 1
        for pre in ("", "n_"):
            mid = m[pre + "ins_minus_del"]["mean"]
            assert abs(mid - (m[pre + "insertion"]["mean"] - m[pre + "deletion"]["mean"])) < 1e-6
        raw_del = torch.tensor(m["deletion"]["values"], dtype=torch.float64)
        n_del = torch.tensor(m["n_deletion"]["values"], dtype=torch.float64)
        assert bool((n_del >= raw_del - 1e-9).all())  # dividing by p <= 1 never lowers the area
    assert out_png.stat().st_size > 10_000
    assert report["methods"]["random"]["paired"]["n_ins_minus_del"] is None  # the row compared against
    fc = report["methods"]["fastcam"]
    rnd = report["methods"]["random"]["n_ins_minus_del"]["values"]
    diff = [a - b for a, b in zip(fc["n_ins_minus_del"]["values"], rnd, strict=True)]
    d = fc["paired"]["n_ins_minus_del"]
    assert abs(d["mean"] - sum(diff) / 4) < 1e-9 and d["low"] <= d["mean"] <= d["high"]
    assert d["wins"] == sum(x > 0 for x in diff)
    pairs = report["pairs"]["n_ins_minus_del"]
    assert [(q["a"], q["b"]) for q in pairs][:3] == [("fastcam", "gradcampp"), ("fastcam", "random"),
                                                     ("fastcam", "centre")]
    assert len(pairs) == 6 and len(report["pairs"]["ins_minus_del"]) == 6
    verdicts = [line.strip() for line in text.splitlines() if line.startswith("  fastcam ")]
    assert len(verdicts) == 6 and verdicts[0].startswith("fastcam ") and "/4 images" in verdicts[0]


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["eval", "missing.jpg"], 1, "no such file"),
        (["eval", "--methods", "nosuch"], 2, "unknown method"),
        (["eval", "--methods", "gradcam/gamma"], 2, "does not change"),
        (["eval", "--steps", "1"], 2, "--steps"),
        (["eval", "--methods", "fastcam", "--against", "gradcam"], 2, "--against"),
        (["eval", "--json", "/nonexistent/dir/x.json"], 1, "--json"),
        (["eval", "--every", "0"], 2, "--every"),
        (["eval", "--baseline", "grey"], 2, "--baseline"),
        (["eval", "--cskip", "-1"], 2, "--cskip"),
    ],
)
def test_cli_bad_input_is_one_line(argv, code, words, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_cli_bad_files_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((DATA / "coffee.jpg").read_bytes())
    cases = [
        (["eval", str(empty)], 1, "no image or video files"),
        (["eval", str(broken)], 1, "broken.mp4"),
        (["eval", str(photo), "--json", str(photo)], 1, "input file"),
        (["eval", str(photo), "--json", str(tmp_path / "a"), "--plot", str(tmp_path / "a")], 1, "same file"),
        (["eval", str(photo), str(photo)], 2, "both named"),
    ]
    for argv, code, words in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)
    assert photo.read_bytes() == (DATA / "coffee.jpg").read_bytes()  # the input is untouched


def test_video_inputs_give_every_nth_frame_with_its_index():
    from rtsal.eval.inputs import expand_inputs, load_samples

    paths = expand_inputs([DATA])
    assert DATA / "demo.mp4" in paths and DATA / "coffee.jpg" in paths
    samples = load_samples([DATA / "demo.mp4"], every=60)
    assert [s.name for s in samples] == ["demo.mp4#0", "demo.mp4#60", "demo.mp4#120", "demo.mp4#180"]
    assert [s.frame for s in samples] == [0, 60, 120, 180] and {s.clip for s in samples} == {"demo.mp4"}
    assert samples[0].image.shape == (360, 480, 3) and samples[0].image.dtype.name == "uint8"
    assert abs(samples[1].pts - 4.0) < 1e-3  # 15 fps
    assert not (samples[0].image == samples[1].image).all()
    with pytest.raises(UsageError, match="--every"):
        load_samples([DATA / "demo.mp4"], every=0)


# -- the synthetic model: the ideal map ranks first on every measure and every substrate -----------------
MEASURES_UP = {  # measure -> sign that makes higher better
    "insertion": 1, "deletion": -1, "ins_minus_del": 1, "n_insertion": 1, "n_deletion": -1,
    "n_ins_minus_del": 1, "drop": -1, "drop_abs": -1, "increase": 1,
}


@pytest.mark.parametrize("substrate", ev.SUBSTRATES)
def test_ideal_map_ranks_first_on_every_measure_and_substrate(substrate):
    """Class 0 looks only at an off-centre box (so the centre map is not nearly ideal); the substrates carry
    no evidence (p = 0.5 on them), the images more texture inside the box than outside, so the intact
    probability is 0.6-0.9 and normalising has room."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[6:26, 4:24] = True
    model = RegionModel(mask, bias=0.0)
    names = ("ideal", "random", "centre", "inverted")
    scores: dict[str, dict[str, list[float]]] = {k: {m: [] for m in MEASURES_UP} for k in names}
    g = torch.Generator().manual_seed(1)
    for i in range(8):
        contrast = 1.2 + 0.3 * float(torch.rand(1, generator=g))
        x = torch.randn(1, 3, H, W, generator=g) * torch.where(mask, contrast, 0.9)
        base = ev.make_baseline(x, substrate, seed=i)
        maps = torch.stack([mask.float(), ev.random_map((H, W), i), ev.centre_map((H, W)), 1 - mask.float()])
        sc = ev.score_maps(model, x, base, maps, target=0, steps=10, batch_size=32, seed=i)
        assert 0.55 < sc.p_image < 0.95
        for m, sign in MEASURES_UP.items():
            for j, k in enumerate(names):
                scores[k][m].append(sign * float(getattr(sc, m)[j]))
    mean = {k: {m: sum(v) / len(v) for m, v in s.items()} for k, s in scores.items()}
    for m in MEASURES_UP:
        others = [mean[k][m] for k in names[1:]]
        if m == "increase":  # an indicator: the ideal map raises the probability on every image
            assert mean["ideal"][m] == 1.0 and mean["inverted"][m] == 0.0, (substrate, mean)
        elif m.startswith("drop"):  # floored at 0: the ideal map loses nothing (centre may tie at 0)
            assert mean["ideal"][m] == 0.0 and mean["ideal"][m] >= max(others), (substrate, m, mean)
        else:
            assert mean["ideal"][m] > max(others), (substrate, m, mean)
        assert mean["inverted"][m] <= min(mean[k][m] for k in names[:-1]), (substrate, m, mean)


def test_substrates_are_what_they_say():
    x = torch.randn(2, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    black = ev.make_baseline(x, "black", mean=mean, std=std)
    torch.testing.assert_close(black * s + m, torch.zeros_like(x))  # rgb 0 after undoing the preprocessing
    flat = ev.make_baseline(x, "mean", mean=mean, std=std)
    torch.testing.assert_close(flat, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    noise = ev.make_baseline(x, "noise", mean=mean, std=std, seed=3)
    rgb = noise * s + m
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0 and 0.45 < float(rgb.mean()) < 0.55
    torch.testing.assert_close(noise, ev.make_baseline(x, "noise", mean=mean, std=std, seed=3))
    assert not torch.equal(noise, ev.make_baseline(x, "noise", mean=mean, std=std, seed=4))
    torch.testing.assert_close(ev.make_baseline(x, "blur", sigma=2.0), ev.gaussian_blur(x, 2.0))
    with pytest.raises(ValueError, match="baseline"):
        ev.make_baseline(x, "grey")


def test_normalised_curves_divide_by_the_intact_probability_and_clip():
    curve = torch.tensor([[0.2, 0.1, 0.3, 0.0], [0.5, 0.5, 0.25, 0.5]])
    n = ev.normalise_curve(curve, torch.tensor([0.2, 0.5]))
    torch.testing.assert_close(n, torch.tensor([[1.0, 0.5, 1.0, 0.0], [1.0, 1.0, 0.5, 1.0]]))
    torch.testing.assert_close(ev.normalise_curve(curve[1], 0.25), torch.tensor([1.0, 1.0, 1.0, 1.0]))


# -- the independent oracle: RISE's deletion/insertion AUC re-derived with a plain loop --------------------
def _rise_blur(img: torch.Tensor, klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: a (klen x klen) Gaussian kernel of width ``nsig`` applied per channel
    with zero padding, written here with plain loops (not rtsal's blur)."""
    half = klen // 2
    k = [[math.exp(-0.5 * ((i - half) ** 2 + (j - half) ** 2) / nsig**2) for j in range(klen)]
         for i in range(klen)]
    total = sum(map(sum, k))
    c, h, w = img.shape
    src = img.tolist()
    out = [[[0.0] * w for _ in range(h)] for _ in range(c)]
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                acc = 0.0
                for i in range(klen):
                    yy = y + i - half
                    if 0 <= yy < h:
                        row = src[ch][yy]
                        for j in range(klen):
                            xx = x + j - half
                            if 0 <= xx < w:
                                acc += k[i][j] * row[xx]
                out[ch][y][x] = acc / total
    return torch.tensor(out, dtype=img.dtype)


def _rise_curve(model, start, finish, order, per_step, n_steps, cls):
    """The probability of ``cls`` as pixels move from ``finish`` into ``start``, ``per_step`` at a time in
    ``order``, one image per forward pass and a softmax written out by hand; n_steps + 1 points."""
    cur = start.clone()
    w = cur.shape[-1]
    out = []
    for k in range(n_steps + 1):
        with torch.no_grad():
            logits = [float(v) for v in model(cur.unsqueeze(0))[0]]
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        out.append(e[cls] / sum(e))
        if k < n_steps:
            for idx in order[k * per_step : (k + 1) * per_step]:
                r, col = divmod(idx, w)
                cur[:, r, col] = finish[:, r, col]
    return out


def _rise_auc(arr):
    """RISE's reference: (sum(a) - a[0]/2 - a[-1]/2) / (len(a) - 1)."""
    return (sum(arr) - arr[0] / 2 - arr[-1] / 2) / (len(arr) - 1)


def test_deletion_insertion_auc_agree_with_a_plain_loop_rise_oracle():
    """The same maps scored by rtsal and by RISE's procedure (Petsiuk et al. 2018, ``evaluation.py``'s
    ``CausalMetric``) rewritten here as plain loops, agreeing to 1e-3 once the conventions are aligned:

    - substrate: RISE deletes to zeros (of the preprocessed tensor) and inserts over a Gaussian blur
      (klen 11, sigma 5); rtsal uses one ``--baseline`` for both curves. Aligned by passing RISE's two
      substrates to two rtsal calls (deletion from the first, insertion from the second).
    - step: RISE moves a fixed ``step`` pixels per step (the last step may be partial); rtsal moves
      ``round(k * HW / steps)`` in total by step k. Identical here because steps divides HW (32 x 32 / 16).
    - softmax: both score the softmax probability of one class; here the intact image's top class.
    - first point: both curves start at 0 pixels moved and end with all of them (N = steps + 1 points),
      and RISE's AUC formula equals rtsal's trapezoid rule.
    - ties: RISE orders pixels by ``argsort`` (ties by index), rtsal breaks ties in a seeded random order;
      aligned by a map without ties.
    The normalised measure (curve / intact-image probability, clipped at 1) is re-derived the same way.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).eval()
    with torch.no_grad():
        model[-1].weight.mul_(40.0)  # a confident head, so removing pixels moves the probability
    h = w = 32
    steps = 16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, h, w, generator=g)
    sal = torch.rand(h, w, generator=g)
    flat = sal.flatten().tolist()
    assert len(set(flat)) == h * w  # no ties
    order = sorted(range(h * w), key=lambda i: -flat[i])  # most salient first
    with torch.no_grad():
        cls = int(model(x.unsqueeze(0)).argmax())
    zeros, blurred = torch.zeros_like(x), _rise_blur(x)
    per_step = h * w // steps
    del_curve = _rise_curve(model, x, zeros, order, per_step, steps, cls)
    ins_curve = _rise_curve(model, blurred, x, order, per_step, steps, cls)

    deletion = ev.deletion_insertion(model, x, zeros, sal, cls, steps=steps, batch_size=7).deletion[0]
    insertion = ev.deletion_insertion(model, x, blurred, sal, cls, steps=steps, batch_size=5).insertion[0]
    assert abs(float(ev.auc(deletion)) - _rise_auc(del_curve)) < 1e-3
    assert abs(float(ev.auc(insertion)) - _rise_auc(ins_curve)) < 1e-3
    for curve in (del_curve, ins_curve):  # the curves move, so agreement is not two constants agreeing
        assert max(curve) - min(curve) > 0.1, curve
    p0 = del_curve[0]
    sc = ev.score_maps(model, x, zeros, sal.unsqueeze(0), cls, steps=steps, batch_size=9)
    assert abs(sc.p_image - p0) < 1e-5
    assert abs(float(sc.deletion[0]) - _rise_auc(del_curve)) < 1e-3
    assert abs(float(sc.n_deletion[0]) - _rise_auc([min(1.0, max(0.0, p / p0)) for p in del_curve])) < 1e-3
    # a map ranked the other way round must score differently, or the oracle could not tell maps apart
    other = ev.deletion_insertion(model, x, zeros, -sal, cls, steps=steps).deletion[0]
    assert abs(float(ev.auc(other)) - _rise_auc(del_curve)) > 1e-3


def test_paired_bootstrap_intervals_and_verdicts():
    from rtsal.eval.stats import paired_bootstrap

    a = [0.5, 0.6, 0.7, 0.8, 0.4, 0.9]
    d = paired_bootstrap(a, [v - 0.1 for v in a], names=("fastcam", "gradcampp"), resamples=500)
    assert abs(d.mean - 0.1) < 1e-12 and abs(d.low - 0.1) < 1e-9 and abs(d.high - 0.1) < 1e-9
    assert d.verdict == ">" and d.wins == 6 and d.n == 6
    assert d.line() == "fastcam > gradcampp: +0.100 [+0.100, +0.100], 6/6 images"
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(60, generator=g).tolist()
    tied = paired_bootstrap(noise, [0.0] * 60, resamples=4000, seed=1)
    assert tied.low < tied.mean < tied.high and tied.verdict == "~"
    assert tied.line().endswith("(no difference shown)")
    # the percentile interval is close to the t-interval for a mean of 60 normal values
    mean, half = mean_ci(noise)
    assert abs((tied.high - tied.low) / 2 - half) < 0.25 * half
    assert paired_bootstrap(noise, [0.0] * 60, resamples=4000, seed=1) == tied  # seeded
    worse = paired_bootstrap([v - 1.0 for v in noise], [0.0] * 60, resamples=1000)
    assert worse.verdict == "<" and worse.high < 0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_report_from_per_image_values_table_and_verdicts():
    """summarise -> format_table / verdict lines without a model: every pair up to 8 rows, else each row
    against --against; the paired column and the verdicts read the same bootstrap."""
    from rtsal.eval.inputs import Sample
    from rtsal.eval.report import format_table, format_verdicts, verdict_lines
    from rtsal.eval.run import MEASURES, EvalConfig, summarise

    def report_for(methods: str, n: int = 5) -> dict:
        specs = parse_methods(methods)
        g = torch.Generator().manual_seed(0)
        per_image = {}
        for k, s in enumerate(specs):
            base = 0.1 * k + 0.01 * torch.randn(n, generator=g)
            per_image[s.label] = {m: base.tolist() for m in MEASURES}
            per_image[s.label]["pointing"] = [None] * n
        samples = [Sample(f"f{i}.jpg", DATA, None) for i in range(n)]  # type: ignore[arg-type]
        curves = {s.label: {c: [1.0, 0.0] for c in ("deletion", "insertion", "n_deletion", "n_insertion")}
                  for s in specs}
        return summarise(EvalConfig(resamples=300), specs, samples, per_image, curves, {}, model_name="m",
                         labels=["x"] * n, targets=[0] * n, probability=[0.5] * n, fractions=[0.0, 1.0])

    small = report_for("fastcam,gradcam")  # 4 rows: 6 pairs
    lines = verdict_lines(small)
    assert len(lines) == 6 and lines[0].startswith("fastcam < gradcam: -0.100 [")  # rows are 0.1 apart
    assert "5/5 images" not in lines[0] and lines[0].endswith("0/5 images")
    table = format_table(small)
    assert "pointing" not in table  # no boxes: no column
    row = next(line for line in table.splitlines() if line.startswith("gradcam "))
    assert "-0.100 [-0.1" in row and "(0/5)" in row  # gradcam (0.1) minus random (0.2), image by image
    text = format_verdicts(small)
    assert text.index("normalised ins - del (headline)") < text.index("raw ins - del")
    big = report_for("engine")  # 16 rows: only against random
    lines = verdict_lines(big)
    assert len(lines) == 15 and all(" random: " in line or line.startswith("random ") for line in lines)
    assert len(big["pairs"]["n_ins_minus_del"]) == 16 * 15 // 2  # the JSON keeps every pair
