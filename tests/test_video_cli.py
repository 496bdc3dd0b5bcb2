"""``rtsal video`` end to end with the real pretrained Lite0: timing, audio and overlay kept; maps and CSV
round-trip; bad input fails before any work; damaged input and Ctrl-C/SIGTERM still leave a playable file."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import AUDIO_RATE, make_clip, probe, vfr_times

from rtsal.cli import main
from rtsal.engine.saliency.combine import upsample
from rtsal.io.video import VideoReader
from rtsal.render.colormap import colorize
from rtsal.render.views import blend

AAC_FRAME = 1024 / AUDIO_RATE


def rtsal(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    code = main(["video", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """161x121 (odd), variable frame rate, AAC audio: a pan over a real photo."""
    path = tmp_path_factory.mktemp("in") / "pan.mp4"
    make_clip(path)
    return path


@pytest.fixture(scope="module")
def h264(tmp_path_factory) -> Path:
    """A 3 s 15 fps H.264 + AAC clip with its index first (faststart), for the damaged copies."""
    path = tmp_path_factory.mktemp("in") / "h264.mp4"
    make_clip(path, 160, 120, [round(i * 1000 / 15) for i in range(45)], 67, codec="libx264", faststart=True)
    return path


@pytest.fixture(scope="module")
def explained(clip, tmp_path_factory) -> dict:
    """One full run with every side output (shared by the tests that read them)."""
    d = tmp_path_factory.mktemp("out")
    paths = {"video": d / "out.mp4", "maps": d / "maps.npz", "csv": d / "frames.csv"}
    code = main(
        [
            "video",
            str(clip),
            "-o",
            str(paths["video"]),
            "--maps",
            str(paths["maps"]),
            "--csv",
            str(paths["csv"]),
            "--no-labels",
            "--crf",
            "16",
            "--batch",
            "4",
        ]
    )
    assert code == 0
    return paths


def test_output_keeps_frames_timestamps_duration_and_audio(clip, explained):
    src, out = probe(clip), probe(explained["video"])
    assert len(out["times"]) == 30 and out["times"] == src["times"]  # VFR timestamps, frame for frame
    assert out["video_duration"] == pytest.approx(src["video_duration"], abs=1e-3)
    assert out["codec"] == "h264" and out["size"] == (162, 122)  # odd size padded by one pixel
    assert out["audio_codec"] == "aac" and out["audio_samples"] == src["audio_samples"]
    assert out["audio_duration"] == pytest.approx(src["audio_duration"], abs=1e-6)


def test_overlay_is_really_there(clip, explained):
    """Each output frame is the input frame blended with the jet-coloured FastCAM map of that frame."""
    with VideoReader(clip) as r:
        frames = [f.image for f in r]
    out = probe(explained["video"])["images"]
    maps = np.load(explained["maps"])["saliency"]
    for k in (0, 13, 29):
        m = upsample(torch.from_numpy(maps[k : k + 1].astype(np.float32)), (121, 161))[0]
        expected = blend(frames[k], colorize(m, "jet"), 0.5).astype(int)
        got = out[k][:121, :161].astype(int)
        assert np.abs(got - expected).mean() < 4  # what was drawn, up to H.264 at crf 16
        assert np.abs(got - frames[k]).mean() > 20  # and it is not the input
        hot, cold = m.numpy() > 0.5, m.numpy() < 0.1
        assert hot.sum() > 200 and cold.sum() > 200
        # jet: high saliency adds red, low saliency adds blue
        red_gain = got[..., 0] - frames[k][..., 0].astype(int)
        blue_gain = got[..., 2] - frames[k][..., 2].astype(int)
        assert red_gain[hot].mean() > red_gain[cold].mean() + 30
        assert blue_gain[cold].mean() > blue_gain[hot].mean() + 30


def test_maps_round_trip(clip, explained):
    z = np.load(explained["maps"])
    times, _ = vfr_times()
    n = 30
    assert z["pts"].tolist() == pytest.approx([t / 1000 for t in times]) and np.all(np.diff(z["pts"]) > 0)
    assert z["index"].tolist() == list(range(n))
    h, w = 224, 288  # model resolution: short side 224, long side in proportion (multiple of 32)
    for name in ("saliency", "smoe", "cam"):
        assert z[name].shape == (n, h, w) and z[name].dtype == np.float16
        assert 0.0 <= float(z[name].min()) and float(z[name].max()) <= 1.0
    assert z["scales"].shape == (n, 5, h, w) and z["scales"].dtype == np.float16
    # FastCAM is SMOE x CAM, pixel for pixel
    fused = z["smoe"].astype(np.float32) * z["cam"].astype(np.float32)
    assert np.abs(fused - z["saliency"].astype(np.float32)).max() < 2e-3
    assert z["topk_indices"].shape == (n, 5) and np.all(np.diff(z["topk_probs"], axis=1) <= 0)
    assert str(z["model"]) == "efficientnet-lite0" and str(z["method"]) == "fastcam"
    assert z["frame_size"].tolist() == [121, 161] and len(z["class_names"]) == 1000


def test_csv_round_trip(explained):
    with open(explained["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    z = np.load(explained["maps"])
    assert len(rows) == 30 and [int(r["index"]) for r in rows] == list(range(30))
    assert [float(r["pts"]) for r in rows] == pytest.approx(z["pts"].tolist(), abs=1e-6)
    assert [int(r["batch"]) for r in rows] == [4] * 28 + [2] * 2  # 30 frames in batches of 4
    assert {r["engine"] for r in rows} == {"eager"}  # which engine drew each frame (RTSAL_COMPILE=0 here)
    names = z["class_names"]
    for r, ids, probs in zip(rows, z["topk_indices"], z["topk_probs"], strict=True):
        assert [int(r[f"class{k}"]) for k in range(1, 6)] == ids.tolist()
        assert [r[f"label{k}"] for k in range(1, 6)] == [str(names[i]) for i in ids]
        assert [float(r[f"score{k}"]) for k in range(1, 6)] == pytest.approx(probs.tolist(), abs=1e-5)
        assert int(r["target"]) == ids[0]
        assert float(r["forward_ms"]) > 0 and float(r["encode_ms"]) >= 0 and float(r["render_ms"]) > 0


def test_side_view_trim_and_batch(clip, tmp_path, capsys):
    out = tmp_path / "side.mkv"
    code, stdout, err = rtsal(
        capsys,
        str(clip),
        "-o",
        str(out),
        "--view",
        "side",
        "--start",
        "1",
        "--end",
        "2",
        "--batch",
        "3",
        "--codec",
        "libx264",
    )
    assert code == 0, err
    times, _ = vfr_times()
    want = [t / 1000 - 1.0 for t in times if 1.0 <= t / 1000 < 2.0]
    got = probe(out)
    assert got["size"] == (484, 122)  # photo | map | overlay, 3 x 161 wide, padded to even
    assert np.allclose(np.subtract(got["times"], got["times"][0]), np.subtract(want, want[0]), atol=1e-3)
    assert got["audio_duration"] == pytest.approx(1.0, abs=3 * AAC_FRAME)
    assert f"wrote {out}: {len(want)} frames, 484x122 libx264, audio copied" in stdout


# -- errors before any work ---------------------------------------------------------------------------
def _bad_cases(clip: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp / "notes.mp4"
    text.write_text("not a video\n" * 50)
    blocker = tmp / "plain-file"
    blocker.write_text("x")
    return {
        "missing input": ([str(tmp / "nope.mp4"), "-o", str(tmp / "o.mp4")], "no such file"),
        "text renamed .mp4": ([str(text), "-o", str(tmp / "o.mp4")], "not a video file"),
        "unknown codec": (
            [str(clip), "-o", str(tmp / "o.mp4"), "--codec", "h266-9000"],
            "unknown video encoder",
        ),
        "missing output dir": ([str(clip), "-o", str(tmp / "no" / "dir" / "o.mp4")], "does not exist"),
        "output under a file": ([str(clip), "-o", str(blocker / "o.mp4")], "not a directory"),
        "output is the input": ([str(clip), "-o", str(clip)], "is the input file"),
        "unknown container": ([str(clip), "-o", str(tmp / "o.qqq")], "no container format"),
        "maps dir missing": (
            [str(clip), "-o", str(tmp / "o.mp4"), "--maps", str(tmp / "x" / "m.npz")],
            "does not exist",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing input",
        "text renamed .mp4",
        "unknown codec",
        "missing output dir",
        "output under a file",
        "output is the input",
        "unknown container",
        "maps dir missing",
    ],
)
def test_bad_input_fails_before_any_work(clip, tmp_path, capsys, case):
    before = clip.read_bytes()
    argv, message = _bad_cases(clip, tmp_path)[case]
    code, out, err = rtsal(capsys, *argv)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtsal video: error: ") and message in lines[0]
    assert "Traceback" not in err and out == ""
    assert clip.read_bytes() == before  # the input is never touched
    assert not (tmp_path / "o.mp4").exists()


def test_unwritable_output(clip, capsys):
    target = Path("/sys/rtsal-test-output.mp4")  # not even root may create files in sysfs
    try:
        with open(target, "ab"):
            pass
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    code, _, err = rtsal(capsys, str(clip), "-o", str(target))
    assert code == 1 and "cannot write" in err and len(err.strip().splitlines()) == 1


def test_usage_errors_exit_2(clip, tmp_path, capsys):
    for extra in (["--batch", "0"], ["--smooth", "1.5"], ["--start", "3", "--end", "2"], ["--alpha", "2"]):
        code, _, err = rtsal(capsys, str(clip), "-o", str(tmp_path / "o.mp4"), *extra)
        assert code == 2 and "error:" in err


# -- damaged input: every frame that decodes is kept --------------------------------------------------
def test_truncated_faststart_keeps_the_frames_that_decode(h264, tmp_path, capsys):
    data = h264.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    code, _, err = rtsal(capsys, str(cut), "-o", str(out), "--batch", "4")
    assert code == 1 and "Traceback" not in err
    line = err.strip()
    assert "\n" not in line and "stopped at" in line and "truncated" in line
    got = probe(out)  # plays
    n = len(got["times"])
    assert 5 < n < 45 and f"{n} frame(s) written to {out}" in line
    assert got["times"] == pytest.approx([i / 15 for i in range(n)], abs=1e-3)
    assert got["audio_duration"] == pytest.approx(n / 15, abs=3 * AAC_FRAME)  # audio up to the last frame


def test_truncated_moov_at_end_says_so(tmp_path, capsys):
    src = tmp_path / "moov_end.mp4"
    make_clip(src, 160, 120, [round(i * 1000 / 15) for i in range(30)], 67, codec="libx264")
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = rtsal(capsys, str(cut), "-o", str(tmp_path / "out.mp4"))
    assert code == 1 and "moov" in err and "truncated" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists()


def test_random_bytes_in_the_middle(h264, tmp_path, capsys):
    data = bytearray(h264.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    code, _, err = rtsal(capsys, str(bad), "-o", str(out))
    assert code == 1 and "could not be decoded and were skipped" in err and len(err.strip().splitlines()) == 1
    got = probe(out)
    assert 30 < len(got["times"]) < 45 and f"{len(got['times'])} frame(s) written" in err
    assert np.all(np.diff(got["times"]) > 0)
    assert got["audio_samples"] > 0


# -- Ctrl-C and SIGTERM: the frames done so far make a playable file ----------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_a_playable_file(tmp_path, sig):
    src = tmp_path / "long.mp4"
    times = [round(i * 1000 / 15) for i in range(240)]  # 16 s: far longer than the test waits
    make_clip(src, 161, 121, times, 67)
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtsal",
            "video",
            str(src),
            "-o",
            str(out),
            "--csv",
            str(rows),
            "--batch",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            # outputs are written to temporary files beside the final names until they are finished
            partial = list(tmp_path.glob(".rows.rtsal-*.tmp.csv"))
            if partial and len(partial[0].read_text().splitlines()) > 10:
                break
            time.sleep(0.1)
        assert not rows.exists() and not out.exists()  # nothing at the final paths while running
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = len(rows.read_text().splitlines()) - 1
    got = probe(out)
    assert 10 <= len(got["times"]) == done < 240
    assert got["times"] == pytest.approx([t / 1000 for t in times[:done]], abs=1e-3)
    assert f"{done} frame(s) written to {out}" in err
    end = times[done] / 1000
    assert got["video_duration"] == pytest.approx(end, abs=1e-3)
    assert got["audio_duration"] == pytest.approx(end, abs=3 * AAC_FRAME)
