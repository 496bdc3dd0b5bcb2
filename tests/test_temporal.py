"""The temporal-stability measure (rtsal.eval.temporal) on clips made from photos by known pans and zooms
(rtsal.eval.motion), where the true flow is known."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from rtsal.eval.motion import MovingCamera
from rtsal.eval.temporal import (
    FLOW_METHODS,
    TemporalMeter,
    consistent_mask,
    optical_flow,
    summarise_errors,
    to_grey,
    warp,
    warp_error,
)

SIZE = (144, 256)
MOTIONS = {
    "pan": ((4.0, 1.5), 1.0),
    "zoom in": ((0.0, 0.0), 1.025),
    "zoom out and pan": ((3.0, -2.0), 1 / 1.03),
}
# what is left of a map fixed to the scene, as a fraction of the plain frame difference, at the default
# working size (here 72x128): a zoom changes the map slowly, so interpolation is most of what is left
LEFT = {"pan": 0.15, "zoom in": 0.35, "zoom out and pan": 0.25}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()


def scene_map(photo: np.ndarray) -> np.ndarray:
    """A [0, 1] map fixed to the scene (it moves with the camera exactly as the photo does)."""
    g = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    return cv2.GaussianBlur(g, (0, 0), 6)


@pytest.mark.parametrize("method", FLOW_METHODS)
@pytest.mark.parametrize("motion", MOTIONS)
def test_flow_matches_the_known_motion(photo, method, motion):
    pan, zoom = MOTIONS[motion]
    cam = MovingCamera(photo.shape[:2], SIZE, pan, zoom)
    a, b = (to_grey(cam.render(photo, t), SIZE) for t in (2, 3))
    true = cam.flow(2)
    est = optical_flow(a, b, method)
    inside = warp(np.zeros(SIZE, np.float32), true)[1]
    epe = np.linalg.norm(est - true, axis=-1)[inside]
    assert float(np.median(epe)) < 0.5, (method, motion, float(np.median(epe)))
    assert float(np.abs(true).max()) > 1.5  # the motion is real: several pixels at the edges


@pytest.mark.parametrize("motion", MOTIONS)
def test_a_map_that_moves_with_the_scene_is_stable(photo, motion):
    """Warped by the flow, the map of frame t lands on the map of frame t+1: the error is a small fraction of
    the plain frame-to-frame difference (what a measure without motion compensation would report), and
    smaller still at a finer working size."""
    pan, zoom = MOTIONS[motion]
    cam = MovingCamera(photo.shape[:2], SIZE, pan, zoom)
    m = scene_map(photo)
    meter = TemporalMeter()
    errors, plain = [], []
    for t in range(4):
        step = meter(cam.render(photo, t), cam.render(m, t))
        if t:
            errors.append(step.error)
            plain.append(float(np.abs(cam.render(m, t) - cam.render(m, t - 1)).mean()))
            assert step.valid > 0.7
    assert np.mean(errors) < LEFT[motion] * np.mean(plain), (errors, plain)
    fine = TemporalMeter(max_side=256)
    finer = [fine(cam.render(photo, t), cam.render(m, t)) for t in range(4)][1:]
    assert np.mean([s.error for s in finer]) < np.mean(errors)


def test_the_true_flow_gives_almost_zero_error(photo):
    cam = MovingCamera(photo.shape[:2], SIZE, (5.0, 2.0), 1.02)
    m = scene_map(photo)
    fw = cam.flow(0)
    inv = np.linalg.inv(cam.matrix(1) @ np.linalg.inv(cam.matrix(0)))  # the true flow from t+1 to t
    h, w = SIZE
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    bw = np.stack([inv[0, 0] * xs + inv[0, 2] - xs, inv[1, 1] * ys + inv[1, 2] - ys], -1).astype(np.float32)
    assert consistent_mask(fw, bw).mean() > 0.85  # only what enters the frame is masked
    step = warp_error(cam.render(m, 0), cam.render(m, 1), fw, bw)
    assert step.error < 0.003


def test_static_clip_is_exactly_zero(photo):
    frame = cv2.resize(photo, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)
    m = np.random.default_rng(0).random((56, 100)).astype(np.float32)  # any map, the same every frame
    meter = TemporalMeter()
    steps = [meter(frame, m) for _ in range(5)]
    assert steps[0] is None
    assert all(s.error == 0.0 and s.valid == 1.0 for s in steps[1:])


@pytest.mark.parametrize("motion", ["static", "pan"])
def test_error_grows_with_frame_to_frame_noise(photo, motion):
    pan, zoom = ((0.0, 0.0), 1.0) if motion == "static" else MOTIONS["pan"]
    cam = MovingCamera(photo.shape[:2], SIZE, pan, zoom)
    m = scene_map(photo)
    rng = np.random.default_rng(1)
    means = []
    for sigma in (0.0, 0.02, 0.05, 0.1, 0.2):
        meter = TemporalMeter()
        errs = []
        for t in range(4):
            noisy = np.clip(cam.render(m, t) + rng.normal(0, sigma, SIZE).astype(np.float32), 0, 1)
            step = meter(cam.render(photo, t), noisy)
            if step is not None:
                errs.append(step.error)
        means.append(float(np.mean(errs)))
    assert all(b > a for a, b in zip(means, means[1:], strict=False)), means
    if motion == "static":
        assert means[0] == 0.0


def test_a_scene_cut_has_no_value():
    rng = np.random.default_rng(2)
    a = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    b = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    meter = TemporalMeter()
    meter(a, np.zeros((96, 128), np.float32))
    step = meter(b, np.ones((96, 128), np.float32))
    assert step.valid < 0.5
    assert math.isnan(step.error) or step.valid >= 0.05
    s = summarise_errors([0.1, math.nan, 0.3])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.2)
    assert summarise_errors([])["mean"] is None
