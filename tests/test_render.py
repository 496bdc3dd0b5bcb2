"""The render stage draws the engine's small maps at the frame's size in uint8: the same picture as
resizing the float map first (within 3 levels of 255), every view at the frame's size, and the `rtsal video`
defaults the throughput measurements chose (batch 1, x264 superfast)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rtsal.frame.infer import FrameResult
from rtsal.frame.render import FrameRenderer
from rtsal.render.colormap import colorize, fit, rgb_lut, to_uint8
from rtsal.render.views import blend, make_view
from rtsal.types import SaliencyResult, TopK

H, W = 96, 160  # the frame
h, w = 32, 56  # the model's maps (about a third of the frame, another aspect: not a plain multiple)


def smooth_map(seed: int, shape: tuple[int, ...] = (h, w)) -> np.ndarray:
    """A saliency-like map in [0, 1]: blurred noise, stretched to the full range."""
    rng = np.random.default_rng(seed)
    m = cv2.GaussianBlur(rng.random(shape[-2:], dtype=np.float32), (0, 0), 3)
    return ((m - m.min()) / (m.max() - m.min())).astype(np.float32)


def result(seed: int = 0) -> SaliencyResult:
    sal = torch.from_numpy(smooth_map(seed))[None]
    scales = torch.stack([torch.from_numpy(smooth_map(seed + k)) for k in range(1, 4)])[None]
    return SaliencyResult(
        logits=torch.zeros(1, 5), topk=TopK(torch.tensor([[2, 1, 0]]), torch.tensor([[0.6, 0.3, 0.1]]),
                                            [["cat", "dog", "cup"]]),
        target=torch.tensor([2]), saliency=sal, method="fastcam", scales=scales, smoe=sal.clone(),
        cam=sal.clone(), layers=("a", "b", "c"),
    )


def frame(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def float_recipe(m: np.ndarray, image: np.ndarray) -> np.ndarray:
    """What was drawn before: the float map resized to the frame, quantised, coloured, blended."""
    big = cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR)
    u = (np.clip(big, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    return blend(image, cv2.applyColorMap(u, rgb_lut("jet")), 0.5)


def test_uint8_map_at_frame_size_matches_the_float_resize():
    m = smooth_map(3)
    got = to_uint8(m, (H, W))
    ref = (np.clip(cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert got.shape == (H, W) and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - ref)
    assert diff.max() <= 3 and diff.mean() < 0.6
    assert np.array_equal(to_uint8(m), to_uint8(m, (h, w)))  # its own size: no resize
    # shrinking averages (area), so a one-pixel spike does not vanish or alias
    spike = np.zeros((64, 64), np.float32)
    spike[10:12, 10:12] = 1.0
    small = to_uint8(spike, (16, 16))
    assert small[2, 2] == pytest.approx(64, abs=2) and small.sum() == small[2, 2]
    assert fit(np.zeros((5, 7, 3), np.uint8), (10, 14)).shape == (10, 14, 3)


def test_colorize_takes_torch_maps_and_a_size():
    m = smooth_map(4)
    a = colorize(torch.from_numpy(m), "turbo", (H, W))
    b = colorize(m, "turbo", (H, W))
    assert a.shape == (H, W, 3) and np.array_equal(a, b)
    with pytest.raises(ValueError, match="unknown colour map"):
        colorize(m, "nope", (H, W))


def test_renderer_draws_model_size_maps_as_the_float_recipe_did():
    r, image = result(5), frame()
    renderer = FrameRenderer("overlay", "jet", 0.5, labels=0)
    out = renderer(image, FrameResult(r, 0, {}, 1, "fastcam"))
    ref = float_recipe(r.saliency[0].numpy(), image)
    assert out.shape == image.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 6 and diff.mean() < 0.5  # a map level off by up to 3, through jet and alpha 0.5
    assert np.abs(out.astype(int) - image).mean() > 20  # and the map is there
    assert renderer.last is not None and renderer.last.saliency.shape == (1, h, w)  # kept at model size
    assert np.array_equal(image, frame())  # the frame itself untouched


@pytest.mark.parametrize("view", ["overlay", "map", "side", "lovi", "layers"])
def test_every_view_draws_small_maps_at_the_frame_size(view):
    image = frame(2)
    out = FrameRenderer(view, "jet", 0.4, labels=3, smooth=0.5)(image, FrameResult(result(7), 0, {}, 1,
                                                                                   "fastcam"))
    width = 3 * W if view == "side" else W
    if view == "layers":  # a grid of tiles, at least the frame's width
        assert out.shape[1] >= W and out.shape[2] == 3
    else:
        assert out.shape == (H, width, 3)
    assert out.dtype == np.uint8 and out.std() > 5


def test_lovi_colours_at_the_maps_size_then_resizes():
    r, image = result(9), frame(3)
    out = make_view("lovi", "jet", 1.0).annotate(image, r, 0)  # alpha 1: the LOVI colours alone
    assert out.shape == (H, W, 3)
    from rtsal.engine.saliency.lovi import lovi

    small = (lovi(r.scales[0]).numpy()[..., ::-1] * 255 + 0.5).astype(np.uint8)
    ref = cv2.resize(np.ascontiguousarray(small), (W, H), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_video_defaults_are_batch_1_and_x264_superfast(tmp_path):
    from rtsal.cli import build_parser
    from rtsal.frame.video_job import VideoSettings
    from rtsal.io.video import DEFAULT_PRESET

    args = build_parser().parse_args(["video", "in.mp4", "-o", str(tmp_path / "o.mp4")])
    assert args.batch == 1 and args.preset == "superfast" == DEFAULT_PRESET == VideoSettings().preset
    assert VideoSettings().batch == 1
