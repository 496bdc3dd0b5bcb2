"""`rtsal webcam` and `rtsal demo`: sources, the real pipeline with the real model, sinks, HUD, smoothing, the
missing-camera and no-display errors, and the window under Xvfb."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import decode, pan_frames, pipeline_threads, write_clip

from rtsal.cli import main
from rtsal.errors import CaptureError
from rtsal.io.sinks import NO_DISPLAY, Mp4Recorder, display_problem
from rtsal.io.sources import CameraSource, StreamSource
from rtsal.pipeline import run_pipeline
from rtsal.render.hud import Hud, HudInfo
from rtsal.render.smooth import MapSmoother
from rtsal.types import Frame, SaliencyResult, TopK

ROOT = Path(__file__).resolve().parents[1]
PAN = (480, 360, 20)  # a 480x360 window 20 rows down the coffee photo


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames, 160x120, 10 fps."""
    return write_clip(tmp_path_factory.mktemp("clip") / "pan.mp4", pan_frames(12, 160, 120, crop=PAN), fps=10)


def no_display_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = str(ROOT)
    return env


# -- errors a user meets first -------------------------------------------------------------------------------
def test_missing_camera_exits_1_with_one_line_before_the_model_loads(no_model, capsys):
    r = subprocess.run([sys.executable, "-m", "rtsal", "webcam", "--camera", "7"], capture_output=True,
                       text=True, timeout=60, env=no_display_env())
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "camera 7" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    # no model is loaded before the camera is opened (so the answer comes at once)
    assert main(["webcam", "--camera", "7", "--no-window"]) == 1
    assert "camera 7" in capsys.readouterr().err


def test_no_display_says_so_instead_of_aborting(clip):
    r = subprocess.run([sys.executable, "-m", "rtsal", "webcam", "--source", str(clip)], capture_output=True,
                       text=True, timeout=60, env=no_display_env())
    assert r.returncode == 1, r.stderr  # not -6 (SIGABRT from Qt)
    assert r.stderr.strip().splitlines() == [f"rtsal webcam: error: {NO_DISPLAY}"]


def test_display_problem():
    assert display_problem({}, "linux") == NO_DISPLAY
    assert ":987654" in display_problem({"DISPLAY": ":987654"}, "linux")  # no such X server
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({}, "win32") is None and display_problem({}, "darwin") is None


@pytest.mark.parametrize("first, ok", [("cv2", True), ("av", False)])
def test_window_refuses_to_open_after_pyav_was_imported_first(first, ok):
    """PyAV's wheel bundles its own libxcb; imported before OpenCV, cv2.namedWindow spins forever."""
    second = "av" if first == "cv2" else "cv2"
    code = (f"import {first}, {second}\nfrom rtsal.io.sinks import check_import_order\ncheck_import_order()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=no_display_env())
    assert (r.returncode == 0) == ok, r.stderr
    if not ok:
        assert "DisplayError: PyAV was imported before OpenCV" in r.stderr


def test_bad_options_are_usage_errors(clip, capsys):
    assert main(["webcam", "--source", str(clip), "--no-window", "--smooth", "1.0"]) == 2
    assert main(["webcam", "--source", str(clip), "--no-window", "--max-frames", "0"]) == 2
    assert main(["webcam", "--source", str(clip), "--no-window", "--record", "/no/such/dir/x.mp4"]) == 1
    assert main(["webcam", "--source", str(clip) + ".missing", "--no-window"]) == 1
    err = capsys.readouterr().err
    assert "--smooth" in err and "--max-frames" in err and "/no/such/dir" in err and "no such file" in err


# -- the real pipeline, real threads, real model -------------------------------------------------------------
def test_file_source_every_frame_in_order_with_the_real_model(lite0, clip):
    seen = []

    def infer(frames):
        return [lite0.explain(f.image) for f in frames]

    def render(frame, result):
        seen.append((frame.index, frame.pts, tuple(result.saliency.shape), result.topk.labels[0][0]))

    src = StreamSource(str(clip), realtime=False)
    assert not src.live
    stats = run_pipeline(src, infer, render, live=src.live, batch=3)
    assert [s[0] for s in seen] == list(range(12))
    assert [s[1] for s in seen] == pytest.approx([k / 10 for k in range(12)])
    assert all(s[2] == (1, 120, 160) for s in seen)  # maps at the frame's (H, W), not the model's
    assert "espresso" in {s[3] for s in seen}
    assert (stats.captured, stats.processed, stats.dropped, stats.rendered) == (12, 12, 0, 12)
    assert src.closed and not pipeline_threads()


def test_live_iterator_with_a_slow_model_drops_and_accounts(lite0):
    images = pan_frames(40, 160, 120, crop=PAN)

    def frames():
        for k, image in enumerate(images):
            time.sleep(0.002)
            yield Frame(k, k / 500, time.perf_counter(), image)

    def infer(batch):
        time.sleep(0.02)  # a model slower than this 500 fps source
        return [lite0.explain(f.image) for f in batch]

    order = []
    stats = run_pipeline(frames(), infer, lambda f, r: order.append(f.index), live=True)
    assert stats.dropped > 0 and stats.processed + stats.dropped == stats.captured == 40
    assert order == sorted(order) and order[-1] == 39 and len(order) == stats.processed
    assert not pipeline_threads()


def test_render_error_stops_everything_and_removes_hooks(clip):
    from rtsal.engine.explainer import Explainer

    src = StreamSource(str(clip), realtime=False)

    def render(frame, result):
        if frame.index == 2:
            raise ZeroDivisionError("sink failed")

    with pytest.raises(ZeroDivisionError) as info, Explainer("efficientnet-lite0") as ex:
        model = ex.model
        run_pipeline(src, lambda fs: [ex.explain(f.image) for f in fs], render, live=False)
    assert info.value.stage == "render"
    assert src.closed and not pipeline_threads()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert hooks == 0


class FakeCapture:
    """Stands in for cv2.VideoCapture on a machine without a camera; records release()."""

    instances: list[FakeCapture] = []

    def __init__(self, index, fail_after=None):
        self.index, self.released, self.reads = index, False, 0
        self.fail_after = fail_after
        self.props = {}
        FakeCapture.instances.append(self)

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        sizes = {cv2.CAP_PROP_FRAME_WIDTH: 160, cv2.CAP_PROP_FRAME_HEIGHT: 120, cv2.CAP_PROP_FPS: 30}
        return sizes.get(prop, 0)

    def read(self):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            return False, None
        return True, np.full((120, 160, 3), (10, 20, 30), np.uint8)

    def release(self):
        self.released = True


def test_camera_frames_are_rgb_and_camera_released_on_error(monkeypatch):
    FakeCapture.instances.clear()
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    cam = CameraSource(0, width=640, height=480, fps=30)
    cap = FakeCapture.instances[0]
    assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == 640 and cam.size == (160, 120)

    def infer(frames):
        assert tuple(frames[0].image[0, 0]) == (30, 20, 10)  # BGR from the camera -> RGB
        if frames[0].index >= 3:
            raise RuntimeError("model failed")
        return [None] * len(frames)

    with pytest.raises(RuntimeError, match="model failed"):
        run_pipeline(cam, infer, lambda f, r: None, live=True)
    assert cap.released and cam.closed and not pipeline_threads()


def test_camera_that_stops_delivering_ends_with_capture_error(monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: FakeCapture(index, fail_after=5))
    cam = CameraSource(1, max_failures=3)
    rendered = []
    with pytest.raises(CaptureError, match="camera 1 stopped delivering frames") as info:
        run_pipeline(cam, lambda fs: [f.index for f in fs], lambda f, r: rendered.append(r), live=True)
    assert info.value.stage == "capture"
    assert rendered and rendered[-1] == 4  # the frames read before it failed were still shown
    assert cam.closed


def test_glob_source(tmp_path):
    for k, image in enumerate(pan_frames(3, 64, 48, crop=PAN)):
        cv2.imwrite(str(tmp_path / f"f{k}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    src = StreamSource(str(tmp_path / "f*.png"), realtime=False, fps=5)
    frames = list(src)
    assert [f.pts for f in frames] == [0.0, 0.2, 0.4] and frames[2].image.shape == (48, 64, 3)


def test_realtime_file_is_live_and_paced(clip):
    src = StreamSource(str(clip), realtime=True)
    assert src.live and src.fps == pytest.approx(10)
    frames = list(src)
    spans = frames[-1].t_capture - frames[0].t_capture
    assert len(frames) == 12 and spans >= 1.1 * 0.99  # 11 periods of 0.1 s: never faster than the file


# -- the command end to end ----------------------------------------------------------------------------------
def test_webcam_source_no_window_record_and_stats(clip, tmp_path, capsys):
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    rc = main(["webcam", "--source", str(clip), "--no-realtime", "--no-window", "--record", str(out),
               "--stats-json", str(stats_path), "--size", "128"])
    assert rc == 0
    stats = json.loads(stats_path.read_text())
    assert (stats["captured"], stats["processed"], stats["rendered"], stats["dropped"]) == (12, 12, 12, 0)
    assert stats["forward_ms"] > 0 and stats["saliency_overhead_pct"] > 0
    assert set(stats["stage_ms"]) == {"capture", "infer", "render"} and stats["live"] is False
    assert sum(stats["engines"].values()) == 12  # frames per engine (compiled, eager, eager (compiling))
    start = stats["startup_s"]  # seconds since the process started
    assert 0 < start["model_loaded_s"] <= start["first_frame_s"]
    assert start["first_compiled_s"] is None or start["first_compiled_s"] >= start["first_frame_s"]
    printed = capsys.readouterr().out
    assert "webcam: 12 frames" in printed and "recorded 12 frames" in printed

    frames, pts = decode(out)
    raw, raw_pts = decode(clip)
    assert len(frames) == 12 and frames[0].shape == (120, 160, 3)
    assert pts == pytest.approx(raw_pts, abs=2e-3)  # a file source keeps its own timing
    # Not the raw frames: the colour map is blended in and the HUD darkens the top-left corner.
    diff = np.abs(frames[6].astype(int) - raw[6].astype(int)).mean()
    assert diff > 20
    assert frames[6][:30, :60].mean() < 0.7 * raw[6][:30, :60].mean()


def test_max_frames_and_smoothing(clip, tmp_path):
    stats_path = tmp_path / "stats.json"
    rc = main(["webcam", "--source", str(clip), "--no-realtime", "--no-window", "--max-frames", "5",
               "--smooth", "0.6", "--view", "side", "--stats-json", str(stats_path), "--size", "96"])
    stats = json.loads(stats_path.read_text())
    assert rc == 0 and stats["rendered"] == 5 and stats["smooth"] == 0.6


def test_demo_without_display_records_the_bundled_clip(tmp_path, capsys, monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    clip_file = ROOT / "rtsal" / "data" / "demo.mp4"
    assert clip_file.stat().st_size < 2_000_000
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--max-frames", "6", "--record", str(out), "--size", "128"]) == 0
    printed = capsys.readouterr().out
    assert "no display, so recording" in printed and "demo: 6 frames" in printed
    frames, _ = decode(out)
    assert len(frames) == 6 and frames[0].shape == (360, 480, 3)


# -- small parts ---------------------------------------------------------------------------------------------
def test_recorder_pads_odd_sizes_and_letterboxes_other_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    rec = Mp4Recorder(path, fps=10)
    for k in range(3):
        rec.write(np.full((121, 161, 3), 60 * k, np.uint8), t=k * 0.1)
    rec.write(np.full((121, 483, 3), 200, np.uint8), t=0.35)  # the side view: 3x as wide
    rec.close()
    frames, pts = decode(path)
    assert len(frames) == 4 and frames[0].shape == (122, 162, 3)
    assert pts == pytest.approx([0.0, 0.1, 0.2, 0.35], abs=2e-3)
    last = frames[3]
    assert last[61, 80].mean() > 150 and last[5, 80].mean() < 40  # the wide frame sits in a black letterbox


def fake_result(value: float, shape=(1, 4, 6), method="fastcam", target=1) -> SaliencyResult:
    sal = torch.full(shape, value)
    return SaliencyResult(logits=torch.zeros(1, 3), topk=TopK(torch.tensor([[1]]), torch.tensor([[1.0]]),
                                                              [["x"]]),
                          target=torch.tensor([target]), saliency=sal, method=method)


def test_smoother_is_an_ema_on_a_fixed_scale_and_resets():
    sm = MapSmoother(0.5)
    first = fake_result(0.0)
    assert sm(first).saliency.max() == 0.0
    second = fake_result(1.0)
    out = sm(second)
    assert torch.allclose(out.saliency, torch.full((1, 4, 6), 0.5))
    assert torch.allclose(second.saliency, torch.ones(1, 4, 6))  # the input is not changed in place
    assert torch.allclose(sm(fake_result(1.0)).saliency, torch.full((1, 4, 6), 0.75))  # no per-frame stretch
    assert torch.allclose(sm(fake_result(0.2, method="smoe")).saliency, torch.full((1, 4, 6), 0.2))  # reset
    assert torch.allclose(sm(fake_result(1.0, method="smoe", target=2)).saliency, torch.ones(1, 4, 6))
    assert MapSmoother(0.0)(second) is second
    with pytest.raises(ValueError):
        MapSmoother(1.0)


def test_hud_numbers_and_drawing():
    info = HudInfo(fps=24.5, latency_ms=61.0, forward_ms=40.0, saliency_ms=1.2, dropped=7, method="fastcam",
                   cost="forward only", behind=False)
    assert info.overhead_pct == pytest.approx(3.0)
    text = "\n".join(info.lines())
    assert "24.5 fps" in text and "latency 61 ms" in text and "dropped 7" in text
    assert "forward 40.0 ms" in text and "saliency 1.2 ms (+3.0%)" in text
    assert "fastcam [forward only]" in text
    graph = HudInfo(**{**info.__dict__, "engine": "compiled"}).lines()  # forward and maps are one graph
    assert graph[1] == "forward+maps 40.0 ms  after 1.2 ms" and "compiled" in graph[2]
    image = np.full((240, 320, 3), 128, np.uint8)
    calm = Hud().annotate(image, info)
    assert (image == 128).all()  # drawn on a copy
    assert calm[:40, :100].mean() < 100 and calm[200:, 200:].mean() == 128
    behind = Hud().annotate(image, HudInfo(**{**info.__dict__, "behind": True}))
    red = (behind[..., 0] > 180) & (behind[..., 1] < 120)
    assert red.sum() > 20 and not ((calm[..., 0] > 180) & (calm[..., 1] < 120)).any()
    helped = Hud().annotate(image, info, help=True)
    assert helped[:40, -60:].mean() < 100  # the help box, top-right


# -- the window, under a virtual X server --------------------------------------------------------------------
DRIVER = r"""
import json, subprocess, sys, time
from pathlib import Path
import cv2
clip, out_dir = sys.argv[1], Path(sys.argv[2])
cmd = [sys.executable, "-m", "rtsal", "webcam", "--source", clip, "--size", "128",
       "--stats-json", str(out_dir / "stats.json"), "--snapshot-dir", str(out_dir)]
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wid, deadline = None, time.time() + 150
while wid is None and time.time() < deadline and p.poll() is None:
    r = subprocess.run(["xdotool", "search", "--name", "^rtsal$"], capture_output=True, text=True)
    wid = r.stdout.split()[0] if r.stdout.split() else None
    time.sleep(0.3)
shot = out_dir / "window.png"
while wid and time.time() < deadline and p.poll() is None:
    time.sleep(0.5)
    subprocess.run(["import", "-window", wid, str(shot)], capture_output=True)
    image = cv2.imread(str(shot))
    if image is not None and image.mean() > 20:
        break
if wid:
    subprocess.run(["xdotool", "key", "--window", wid, "s"], capture_output=True)
    time.sleep(1.5)
    subprocess.run(["xdotool", "key", "--window", wid, "q"], capture_output=True)
try:
    out, err = p.communicate(timeout=60)
except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
print(json.dumps({"rc": p.returncode, "wid": wid, "stdout": out, "stderr": err}))
"""


def _has_gui() -> bool:
    info = cv2.getBuildInformation()
    gui = [line for line in info.splitlines() if line.strip().startswith("GUI:")]
    return bool(gui) and "NONE" not in gui[0].upper()


WINDOW_TOOLS = ("xvfb-run", "xdotool", "import")


@pytest.mark.slow
@pytest.mark.skipif(not all(shutil.which(t) for t in WINDOW_TOOLS) and not os.environ.get("CI"),
                    reason="needs xvfb-run, xdotool and imagemagick's import")
@pytest.mark.skipif(not _has_gui(), reason="this OpenCV build has no GUI")
def test_window_under_xvfb_shows_the_overlay_and_quits_on_q(tmp_path):
    missing = [t for t in WINDOW_TOOLS if not shutil.which(t)]
    if missing:  # only under CI, which must test the window: .ci/run installs them
        pytest.fail(f"CI must run the window test; missing {', '.join(missing)} (see .ci/run)")
    raw = pan_frames(300, 320, 240, crop=PAN)
    clip = write_clip(tmp_path / "long.mp4", raw, fps=10)  # 30 s: only q can end the run early
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 640x480x24", sys.executable, str(driver), str(clip),
           str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["wid"], result
    assert result["rc"] == 0, result["stderr"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert 0 < stats["rendered"] and stats["captured"] < 300  # q ended it, not the end of the clip

    shot = cv2.cvtColor(cv2.imread(str(tmp_path / "window.png")), cv2.COLOR_BGR2RGB)
    assert shot.shape[:2] == (240, 320), shot.shape
    assert shot.mean() > 20  # not black

    def blue(image):  # the jet colour map paints low saliency blue; the coffee photo has no such blue
        region = image[120:, 160:].astype(int)  # bottom-right: clear of the HUD and the labels
        return ((region[..., 2] - region[..., 0]) > 40).mean()

    assert blue(shot) > 0.2 and max(blue(f) for f in raw) < 0.02  # the overlay, not the raw frame
    hud = shot[:40, :150].astype(int)
    assert (hud.max(axis=2) < 60).mean() > 0.3 and (hud.min(axis=2) > 200).sum() > 20  # dark box, white text
    snaps = sorted(tmp_path.glob("rtsal-snapshot-*.png"))
    assert len(snaps) == 1 and cv2.imread(str(snaps[0])).shape == (240, 320, 3)
    assert "webcam:" in result["stdout"]


def test_session_applies_hotkeys_to_what_it_explains_and_draws(clip):
    """m, 2, v and space reach the infer and render stages of a live session (no window: keys pressed
    directly on the state machine the window would feed)."""
    from rtsal.cli import build_parser
    from rtsal.commands.common import make_runner
    from rtsal.commands.webcam import live_settings
    from rtsal.frame.infer import FrameExplainer
    from rtsal.frame.live import LiveSession
    from rtsal.io.sinks import NullSink

    args = build_parser().parse_args(["webcam", "--source", str(clip), "--no-window", "--size", "128"])
    explainer = FrameExplainer(make_runner(args), args.method)
    session = LiveSession(explainer, live_settings(args), NullSink(), None, live=True)
    model = explainer.runner.model
    try:
        image = next(iter(StreamSource(str(clip), realtime=False))).image
        frame = Frame(0, 0.0, time.perf_counter(), image)
        (fr1,) = session.infer([frame])
        first = fr1.result
        assert first.method == "fastcam"
        session.render(frame, fr1)
        assert session.last_topk[:2] == first.topk.indices[0, :2].tolist()

        session.hotkeys.press("m")
        (fr2,) = session.infer([frame])
        second = fr2.result
        assert second.method == "smoe" and not torch.allclose(second.saliency, first.saliency)

        session.hotkeys.press("2", topk=session.last_topk)  # explain the class ranked 2nd
        (fr3,) = session.infer([frame])
        pinned = fr3.result
        assert int(pinned.target[0]) == session.last_topk[1] != int(first.target[0])

        while session.state.method != "gradcam-full":  # a comparison method, on the same model
            session.hotkeys.press("m")
        (fr4,) = session.infer([frame])
        full = fr4.result
        h, w = first.saliency.shape[-2:]  # every method's maps come back at model resolution
        assert full.method == "gradcam-full" and full.saliency.shape == (1, h, w)

        session.hotkeys.press("v")
        assert session.state.view == "lovi"
        session.render(frame, fr3)
        shown, _ = session.display.get(0.0)
        assert shown.shape == (120, 160, 3)
        session.hotkeys.press("v")  # layers: a grid of every scale
        session.render(frame, fr3)
        grid, _ = session.display.get(0.0)
        assert grid.shape != shown.shape or not np.array_equal(grid, shown)

        session.hotkeys.press(" ")
        assert session.infer([frame]) == [None]  # paused: no model work
        assert session.render(frame, None) is True
    finally:
        session.close()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_ctrl_c_exits_130_and_still_writes_stats_and_a_playable_recording(clip, tmp_path, monkeypatch,
                                                                         capsys, python_sigint):
    import _thread

    from rtsal.frame.live import LiveSession

    render = LiveSession.render

    def render_then_ctrl_c(self, frame, item):
        if frame.index == 4:
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        if frame.index >= 4:
            time.sleep(0.1)  # a run still going when the key lands (a fast machine could finish the clip)
        return render(self, frame, item)

    monkeypatch.setattr(LiveSession, "render", render_then_ctrl_c)
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    rc = main(["webcam", "--source", str(clip), "--no-realtime", "--no-window", "--record", str(out),
               "--stats-json", str(stats_path), "--size", "96"])
    assert rc == 130
    stats = json.loads(stats_path.read_text())
    assert stats["interrupted"] is True and 5 <= stats["rendered"] < 12
    frames, _ = decode(out)
    assert len(frames) == stats["rendered"]
    assert "interrupted:" in capsys.readouterr().err
    assert not pipeline_threads()
