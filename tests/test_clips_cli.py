"""Clip models in the commands: `rtsal video` sliding windows (every frame, audio, CSV window per frame),
`rtsal webcam` ring buffer, `rtsal layers`, and the one-line refusals. Seeded r3d_18, weights none, 64 px."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rtsal.cli import main
from rtsal.models import MODELS

N_FRAMES, W, H = 14, 96, 64
CLIP = ["--model", "r3d_18", "--weights", "none", "--size", "64"]


def write_video(path: Path, n: int, audio: bool = True) -> None:
    """n frames at 10 fps (a square moving over a gradient), mpeg4, with a 440 Hz AAC track as long."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.codec_context.time_base = v.time_base = Fraction(1, 10)
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        for i in range(n):
            img = np.zeros((H, W, 3), np.uint8)
            img[:] = np.linspace(0, 150, W, dtype=np.uint8)[None, :, None]
            img[16:40, 4 + 5 * i : 28 + 5 * i] = (240, 200, 30)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
        c.mux(v.encode())
        if a is not None:
            t = np.arange(int(16000 * n / 10)) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                chunk = samples[:, start : start + 1024]
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, start
                c.mux(a.encode(af))
            c.mux(a.encode())


def count(path: Path) -> tuple[int, int]:
    """(video frames, audio streams) of a file, decoded independently."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0)), len(c.streams.audio)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "moving.mp4"
    write_video(path, N_FRAMES)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_video_sliding_window_keeps_every_frame_and_the_audio(video, tmp_path, capsys):
    out, table = tmp_path / "out.mp4", tmp_path / "frames.csv"
    code, stdout, err = run(capsys, "video", str(video), "-o", str(out), "--csv", str(table), *CLIP,
                            "--clip-len", "8", "--clip-stride", "4", "--no-progress")
    assert code == 0, err
    assert count(out) == (N_FRAMES, 1)
    rows = list(csv.DictReader(table.open()))
    assert [int(r["index"]) for r in rows] == list(range(N_FRAMES))
    windows = [(int(r["window_start"]), int(r["window_end"])) for r in rows]
    # windows of 8 frames every 4 (the first ones shorter, padded with their first frame), the last
    # one ending with the last frame; each frame's map comes from the window that ends with its group
    assert windows == [(0, 3)] * 4 + [(0, 7)] * 4 + [(4, 11)] * 4 + [(6, 13)] * 2
    assert all(int(r["batch"]) == (4 if i < 12 else 2) for i, r in enumerate(rows))
    assert {r["label1"] for r in rows} <= set(MODELS["r3d_18"].categories())  # Kinetics-400 names


@pytest.mark.slow
def test_webcam_ring_buffer_runs_on_a_file(video, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    code, stdout, err = run(capsys, "webcam", "--source", str(video), "--no-window", "--no-realtime", *CLIP,
                            "--clip-len", "8", "--max-frames", "5", "--stats-json", str(stats))
    assert code == 0, err
    import json

    assert json.loads(stats.read_text())["rendered"] == 5


def test_refusals_are_one_line(video, tmp_path, capsys):
    image = tmp_path / "still.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    code, _, err = run(capsys, "image", str(image), "-o", str(tmp_path / "o"), *CLIP)
    assert code == 2 and "explains video clips" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "video", str(video), "-o", str(tmp_path / "a.mp4"), "--model", "resnet18",
                       "--weights", "none", "--size", "64", "--clip-len", "8")
    assert code == 2 and "need a clip model" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "video", str(video), "-o", str(tmp_path / "b.mp4"), *CLIP, "--clip-len", "4")
    assert code == 2 and "minimum" in err and len(err.strip().splitlines()) == 1
    short = tmp_path / "short.mp4"
    write_video(short, 4, audio=False)
    code, _, err = run(capsys, "video", str(short), "-o", str(tmp_path / "c.mp4"), *CLIP)
    assert code == 1 and "needs at least 8" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.mp4").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["r3d_18", "swin_t"])
def test_layers_command(model, capsys):
    code, out, _ = run(capsys, "layers", model)
    assert code == 0
    expect = {"r3d_18": ("layer4", "closed form from the linear head `fc`"),
              "swin_t": ("features.7", "autograd through the head")}[model]
    assert all(e in out for e in expect)
