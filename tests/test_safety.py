"""Never lose a user's file: the output-safety rule across every command, signals mid-run, a full disk, and
the bad inputs that once gave a traceback, a false success or unbounded memory.

The rule (docs/design.md, "Outputs and failure"): no output is the same file as an input or another output
(by path, symlink or hard link), checked before any work; outputs are written to a temporary file and moved
into place when complete; a signal finishes what is done; zero frames written is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import DATA, make_clip, pipeline_threads, probe

from rtsal.cli import main
from rtsal.errors import UsageError, VideoIOError
from rtsal.outputs import AtomicPath, atomic_write_text, check_outputs, same_file

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--model", "resnet18", "--weights", "none", "--size", "64"]  # a real model, quick to build


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rtsal {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 30-frame 161x121 clip with AAC audio."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_clip(path)
    return path


@pytest.fixture
def own_clip(clip, tmp_path) -> Path:
    """A copy of the clip the test may try to destroy."""
    dst = tmp_path / "clip.mp4"
    shutil.copyfile(clip, dst)
    return dst


# -- the library pieces -------------------------------------------------------------------------------------
def test_same_file_sees_symlinks_and_hard_links(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("a")
    (tmp_path / "sym.txt").symlink_to(a)
    os.link(a, tmp_path / "hard.txt")
    assert same_file(a, tmp_path / "sym.txt") and same_file(a, tmp_path / "hard.txt")
    assert same_file(a, tmp_path / "." / "a.txt")
    assert not same_file(a, tmp_path / "b.txt")


def test_check_outputs_refuses_clashes_fifos_and_folders(tmp_path):
    a = tmp_path / "in.mp4"
    a.write_bytes(b"x")
    with pytest.raises(VideoIOError, match="-o .* is the input file"):
        check_outputs([a], [("-o", a)])
    with pytest.raises(VideoIOError, match="--csv and -o name the same file"):
        check_outputs([a], [("-o", tmp_path / "o.mp4"), ("--csv", tmp_path / "o.mp4")])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(VideoIOError, match="not a regular file"):
        check_outputs([], [("-o", fifo)])
    with pytest.raises(VideoIOError, match="is a directory"):
        check_outputs([], [("-o", tmp_path)])
    with pytest.raises(VideoIOError, match="does not exist"):
        check_outputs([], [("-o", tmp_path / "no" / "o.mp4")])
    assert check_outputs([a], [("-o", tmp_path / "o.mp4"), ("--csv", None)]) == [tmp_path / "o.mp4"]


def test_atomic_path_keeps_the_old_file_until_commit(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with AtomicPath(final) as a:
        a.tmp.write_text("half")
        assert final.read_text() == "old" and a.tmp.suffix == ".txt" and a.tmp.parent == tmp_path
    assert final.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with AtomicPath(final) as a:
        a.tmp.write_text("new")
        a.commit()
    assert final.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    atomic_write_text(final, "newer")
    assert final.read_text() == "newer"


# -- 1-3: an output that is an input, or two outputs that are one ------------------------------------------
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_image_never_overwrites_its_input(tmp_path, capsys, how):
    photo = tmp_path / "photo.png"
    shutil.copyfile(DATA / "coffee.jpg", tmp_path / "c.jpg")
    cv2.imwrite(str(photo), cv2.imread(str(tmp_path / "c.jpg")))
    before = photo.read_bytes()
    out = tmp_path
    if how != "same path":
        out = tmp_path / "out"
        out.mkdir()
        (out / "photo.png").symlink_to(photo) if how == "symlink" else os.link(photo, out / "photo.png")
    code, _, err = run_cli(capsys, "image", str(photo), "-o", str(out), *FAST)
    assert code == 1 and "is the input file" in one_line_error(err, "image")
    assert photo.read_bytes() == before


def test_image_name_collisions_get_distinct_names(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    src = cv2.imread(str(DATA / "coffee.jpg"))
    cv2.imwrite(str(a / "x.jpg"), src)
    cv2.imwrite(str(a / "x.png"), src[:, ::-1])
    cv2.imwrite(str(b / "x.jpg"), src[::-1])
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "image", str(a / "x.jpg"), str(a / "x.png"), str(b / "x.jpg"),
                              "-o", str(out), *FAST)
    assert code == 0 and "wrote 3 image(s)" in stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == ["x-2.png", "x-3.png", "x.png"]
    pictures = [cv2.imread(str(out / n)) for n in written]
    assert not np.array_equal(pictures[0], pictures[1]) and not np.array_equal(pictures[1], pictures[2])


@pytest.mark.parametrize("flag", ["--record", "--stats-json"])
def test_webcam_outputs_never_replace_the_source(own_clip, capsys, flag):
    before = own_clip.read_bytes()
    code, _, err = run_cli(capsys, "webcam", "--source", str(own_clip), "--no-window", flag, str(own_clip),
                           *FAST)
    assert code == 1 and "is the input file" in one_line_error(err, "webcam")
    assert own_clip.read_bytes() == before


def test_webcam_record_and_stats_must_differ(own_clip, tmp_path, capsys):
    same = tmp_path / "o.mp4"
    code, _, err = run_cli(capsys, "webcam", "--source", str(own_clip), "--no-window", "--record", str(same),
                           "--stats-json", str(same), *FAST)
    assert code == 1 and "name the same file" in one_line_error(err, "webcam")
    assert not same.exists()


@pytest.mark.parametrize("how", ["symlink", "hard link"])
def test_video_output_linked_to_the_input_is_refused(own_clip, tmp_path, capsys, how):
    before = own_clip.read_bytes()
    out = tmp_path / "out.mp4"
    out.symlink_to(own_clip) if how == "symlink" else os.link(own_clip, out)
    code, _, err = run_cli(capsys, "video", str(own_clip), "-o", str(out), *FAST)
    assert code == 1 and "is the input file" in one_line_error(err, "video")
    assert own_clip.read_bytes() == before


@pytest.mark.parametrize("flag", ["--csv", "--maps"])
def test_video_side_outputs_never_replace_the_input(own_clip, tmp_path, capsys, flag):
    before = own_clip.read_bytes()
    code, _, err = run_cli(capsys, "video", str(own_clip), "-o", str(tmp_path / "o.mp4"), flag, str(own_clip),
                           *FAST)
    assert code == 1 and "is the input file" in one_line_error(err, "video")
    assert own_clip.read_bytes() == before and not (tmp_path / "o.mp4").exists()


def test_bench_outputs_must_differ(tmp_path, capsys):
    same = tmp_path / "b.png"
    code, _, err = run_cli(capsys, "bench", "--json", str(same), "--plot", str(same), "--only", "fastcam")
    assert code == 1 and "name the same file" in one_line_error(err, "bench")


# -- 4: signals and kills mid-run, with an older file at the output path ----------------------------------
def _long_clip(tmp_path: Path) -> Path:
    src = tmp_path / "long.mp4"
    make_clip(src, 161, 121, [round(i * 1000 / 15) for i in range(240)], 67)
    return src


def _start_video(src: Path, out: Path, rows: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rtsal", "video", str(src), "-o", str(out), "--csv", str(rows), "--batch", "1",
         *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )


def _wait_for_rows(proc: subprocess.Popen, folder: Path, n: int = 8) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(folder.glob(".rows.rtsal-*.tmp.csv"))
        if partial and len(partial[0].read_text().splitlines()) > n:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not get going: {proc.communicate()}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 130), (signal.SIGHUP, 129)])
def test_signal_finishes_a_playable_file_over_the_old_one(tmp_path, sig, code):
    src = _long_clip(tmp_path)
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    out.write_bytes(b"an older file the user keeps")
    proc = _start_video(src, out, rows)
    try:
        _wait_for_rows(proc, tmp_path)
        assert out.read_bytes() == b"an older file the user keeps"  # untouched while the run goes on
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    done = len(rows.read_text().splitlines()) - 1
    got = probe(out)
    assert 8 <= len(got["times"]) == done < 240
    assert [p.name for p in tmp_path.iterdir() if ".rtsal-" in p.name] == []  # no temporary left


def test_sigkill_leaves_the_old_file_and_only_a_temporary(tmp_path):
    src = _long_clip(tmp_path)
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    out.write_bytes(b"an older file the user keeps")
    proc = _start_video(src, out, rows)
    try:
        _wait_for_rows(proc, tmp_path)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_bytes() == b"an older file the user keeps"
    assert not rows.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("long.mp4", "out.mp4"))
    assert leftovers and all(n.startswith((".out.rtsal-", ".rows.rtsal-")) for n in leftovers)


def test_five_quick_ctrl_c_still_exit_130_with_a_playable_file(tmp_path):
    src = _long_clip(tmp_path)
    out, rows = tmp_path / "out.mp4", tmp_path / "rows.csv"
    proc = _start_video(src, out, rows)
    try:
        _wait_for_rows(proc, tmp_path)
        for _ in range(5):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.02)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert len(probe(out)["times"]) == len(rows.read_text().splitlines()) - 1


# -- a full disk ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (skipped where it cannot be mounted: not root, no mount permission); the lossless video
    written to it below is about 230 KiB."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_keeps_the_old_file_and_says_so(small_disk, clip, capsys):
    out = small_disk / "out.mp4"
    out.write_bytes(b"old" * 1000)
    code, _, err = run_cli(capsys, "video", str(clip), "-o", str(out), "--crf", "0", "--codec", "libx264",
                           *FAST)
    line = one_line_error(err, "video")
    assert code == 1 and ("No space left" in line or "cannot" in line)
    assert out.read_bytes() == b"old" * 1000
    assert [p.name for p in small_disk.iterdir()] == ["out.mp4"]


# -- 5: memory and time bounded by the input, not by its shape ----------------------------------------------
def test_model_input_is_bounded_for_any_aspect_ratio():
    from rtsal.engine.preprocess import MAX_ASPECT, model_size

    for h, w in ((8, 4000), (8, 40000), (4000, 8), (224, 224), (480, 640), (1, 10**6)):
        mh, mw = model_size(h, w, 224)
        assert min(mh, mw) == 224 and max(mh, mw) <= MAX_ASPECT * 224
    assert model_size(480, 640, 224) == (224, 288)  # ordinary frames as before


def test_a_needle_image_runs_in_bounded_memory(tmp_path, capsys):
    needle = tmp_path / "needle.png"
    cv2.imwrite(str(needle), np.random.default_rng(0).integers(0, 255, (8, 40000, 3), dtype=np.uint8))
    code, stdout, err = run_cli(capsys, "image", str(needle), "-o", str(tmp_path / "out"), *FAST)
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "out" / "needle.png")).shape == (8, 40000, 3)


def test_a_tall_thin_video_is_explained(tmp_path, capsys):
    src, out = tmp_path / "thin.mp4", tmp_path / "out.mp4"
    make_clip(src, 16, 400, [0, 100, 200], 100, audio=False)
    code, _, err = run_cli(capsys, "video", str(src), "-o", str(out), *FAST)
    assert code == 0, err
    assert probe(out)["size"] == (16, 400)


def test_a_tiny_video_is_refused_before_the_model_loads_and_named(tmp_path, capsys, no_model):
    src = tmp_path / "dot.mp4"
    make_clip(src, 2, 2, [0, 100], 100, audio=False)
    code, _, err = run_cli(capsys, "video", str(src), "-o", str(tmp_path / "o.mp4"))
    assert code == 1 and "dot.mp4" in one_line_error(err, "video") and "at least" in err


# -- 6-8: one clear line instead of a traceback, and no false success --------------------------------------
def test_start_past_the_end_is_an_error_and_keeps_the_old_file(clip, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"older")
    code, stdout, err = run_cli(capsys, "video", str(clip), "-o", str(out), "--start", "100", *FAST)
    assert code == 1 and stdout == ""
    line = one_line_error(err, "video")
    assert "left as it was" in line or "cannot decode any video frame" in line
    assert out.read_bytes() == b"older"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cuda:7"], "--device"),
        (["--device", "bogus"], "unknown device"),
        (["--size", "100000"], "--size must be within"),
        (["--layer-weights", "nan,1,1,1,1"], "--layer-weights"),
        (["--layer-weights", "0,0,0,0,0"], "--layer-weights"),
        (["--target", "-3"], "--target"),
    ],
)
@pytest.mark.parametrize("command", ["image", "video", "webcam"])
def test_bad_engine_options_exit_2_before_the_model(command, argv, message, clip, tmp_path, capsys,
                                                    no_model):
    io = {
        "image": [str(DATA / "coffee.jpg"), "-o", str(tmp_path / "out")],
        "video": [str(clip), "-o", str(tmp_path / "o.mp4")],
        "webcam": ["--source", str(clip), "--no-window"],
    }[command]
    code, _, err = run_cli(capsys, command, *io, *argv)
    assert code == 2 and message in one_line_error(err, command)
    assert not (tmp_path / "out").exists()  # a failed run leaves no empty folder


@pytest.mark.parametrize("argv", [["--start", "nan"], ["--end", "nan"], ["--start", "inf"], ["--crf", "nan"],
                                  ["--alpha", "inf"], ["--smooth", "nan"], ["--preset", "bogus"]])
def test_non_finite_and_unknown_video_options_exit_2(clip, tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line error, or rtsal's
        code = main(["video", str(clip), "-o", str(tmp_path / "o.mp4"), *argv])
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("rtsal video: error:")
    assert not (tmp_path / "o.mp4").exists()


def test_weights_file_with_nan_is_refused(tmp_path, capsys):
    from torchvision.models import resnet18

    state = resnet18().state_dict()
    state["fc.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    code, _, err = run_cli(capsys, "image", str(DATA / "coffee.jpg"), "-o", str(tmp_path / "o"),
                           "--model", "resnet18", "--weights", str(path))
    assert code == 1 and "NaN or infinite" in one_line_error(err, "image")


def test_python_api_refuses_nan_and_fractional_targets_and_converts_dtypes():
    from rtsal import Explainer

    with Explainer("resnet18", weights=None, size=64) as e:
        x = torch.randn(1, 3, 64, 64)
        with pytest.raises(UsageError, match="NaN or infinite"):
            e.explain(torch.full((1, 3, 64, 64), float("nan")))
        with pytest.raises(UsageError, match="an integer"):
            e.explain(x, target=3.7)
        assert int(e.explain(x, target=3.0).target[0]) == 3
        ref = e.explain(x).saliency
        for dtype in (torch.float16, torch.float64):
            got = e.explain(x.to(dtype)).saliency
            assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=0.02)


# -- 9: the rough edges --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["mkv", "ts"])
def test_truncated_mkv_and_ts_say_so(tmp_path, capsys, ext):
    src = tmp_path / f"full.{ext}"
    make_clip(src, 160, 120, [round(i * 1000 / 15) for i in range(45)], 67, codec="libx264")
    cut = tmp_path / f"cut.{ext}"
    data = src.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "o.mp4"
    code, _, err = run_cli(capsys, "video", str(cut), "-o", str(out), *FAST)
    assert code == 1 and "truncated" in one_line_error(err, "video")
    assert 10 < len(probe(out)["times"]) < 45  # the frames that decoded are kept


def test_stats_json_checked_up_front_and_written_on_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "webcam", "--source", str(DATA / "demo.mp4"), "--no-window",
                           "--stats-json", str(tmp_path / "no" / "stats.json"))
    assert code == 1 and "does not exist" in one_line_error(err, "webcam")

    bad = tmp_path / "bad.ts"  # decodes part way, then the capture stage fails
    make_clip(tmp_path / "full.ts", 160, 120, [round(i * 1000 / 15) for i in range(30)], 67, codec="libx264")
    data = (tmp_path / "full.ts").read_bytes()
    bad.write_bytes(data[: len(data) // 2 + 100])  # inside a 188-byte packet
    stats = tmp_path / "stats.json"
    code, _, err = run_cli(capsys, "webcam", "--source", str(bad), "--no-window", "--no-realtime",
                           "--stats-json", str(stats), *FAST)
    assert code == 1 and "truncated" in err
    summary = json.loads(stats.read_text())
    assert summary["outcome"] == "error" and summary["rendered"] > 0


def test_writing_onto_a_fifo_fails_at_once(clip, tmp_path):
    fifo = tmp_path / "out.mp4"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "rtsal", "video", str(clip), "-o", str(fifo)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "not a regular file" in proc.stderr


def test_image_folder_with_an_unreadable_image_goes_on(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copyfile(DATA / "coffee.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"not a picture at all")
    shutil.copyfile(DATA / "rocket.jpg", folder / "c.jpg")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "image", str(folder), "-o", str(out), *FAST)
    assert code == 1
    assert "wrote 2 image(s)" in stdout and "1 failed" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "b.jpg: error: cannot read" in err
    assert err.strip().splitlines()[-1].startswith("rtsal image: error:")


def test_failed_image_run_leaves_no_empty_folder(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    out = tmp_path / "never"
    code, _, err = run_cli(capsys, "image", str(bad), "-o", str(out), *FAST)
    assert code == 1 and "cannot read" in one_line_error(err, "image")
    assert not out.exists()


def test_corrupt_jpeg_that_decodes_is_reported(tmp_path, capsys):
    data = bytearray((DATA / "coffee.jpg").read_bytes())
    start = len(data) // 3
    data[start : start + 64] = bytes(64)  # zeros in the entropy-coded data: libjpeg warns and goes on
    bad = tmp_path / "damaged.jpg"
    bad.write_bytes(bytes(data))
    if cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is None:
        pytest.skip("this libjpeg refuses the damaged file outright")
    code, _, err = run_cli(capsys, "image", str(bad), "-o", str(tmp_path / "out"), *FAST)
    assert code == 0
    assert "damaged.jpg: warning: the decoder reported damage" in err


def test_file_mode_drops_nothing_when_stopped_early(clip, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    code, _, _ = run_cli(capsys, "webcam", "--source", str(clip), "--no-window", "--no-realtime",
                         "--max-frames", "5", "--stats-json", str(stats), *FAST)
    assert code == 0
    summary = json.loads(stats.read_text())
    assert summary["rendered"] == 5 and summary["dropped"] == 0
    assert not pipeline_threads()


def test_headless_opencv_gets_a_one_line_repair():
    from rtsal.io.sinks import gui_problem

    assert gui_problem("  GUI:                           NONE\n") is not None
    assert "pip uninstall -y opencv-python-headless" in gui_problem("GUI: NONE")
    assert gui_problem("  GUI:                           QT5\n") is None


def test_the_installed_opencv_has_its_gui():
    """After the README's install commands (what CI runs), `rtsal webcam` can still open a window."""
    from rtsal.io.sinks import gui_problem

    assert gui_problem() is None, "a test dependency replaced opencv-python with opencv-python-headless"


def test_demo_never_records_over_its_bundled_clip(capsys, no_model):
    clip = DATA / "demo.mp4"
    before = clip.read_bytes()
    code, _, err = run_cli(capsys, "demo", "--no-window", "--record", str(clip))
    assert code == 1 and "is the input file" in one_line_error(err, "demo")
    assert clip.read_bytes() == before


def test_target_out_of_range_stops_the_image_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "image", str(DATA / "coffee.jpg"), str(DATA / "chelsea.jpg"), "-o",
                           str(tmp_path / "out"), "--target", "5000", *FAST)
    assert code == 2 and "out of range" in one_line_error(err, "image")
    assert not (tmp_path / "out").exists()


def test_an_output_never_replaces_the_weights_file(tmp_path, capsys, no_model):
    from torchvision.models import resnet18

    weights = tmp_path / "w.png"  # an odd name, but a weights file the run reads
    torch.save(resnet18().state_dict(), weights)
    before = weights.read_bytes()
    shutil.copyfile(DATA / "coffee.jpg", tmp_path / "w.jpg")
    code, _, err = run_cli(capsys, "image", str(tmp_path / "w.jpg"), "-o", str(tmp_path),
                           "--model", "resnet18", "--weights", str(weights))
    assert code == 1 and "is the input file" in one_line_error(err, "image")
    assert weights.read_bytes() == before


def test_progress_total_and_speed_ignore_implausible_headers():
    from types import SimpleNamespace

    from rtsal.frame.video_job import VideoSummary, expected_frames

    honest = SimpleNamespace(frames=250, duration=10.0, fps=25.0, start=0.0)
    assert expected_frames(honest) == 250
    assert expected_frames(honest, start=2.0, end=4.0) == 50
    lying = SimpleNamespace(frames=100_000_000, duration=10.0, fps=25.0, start=0.0)
    assert expected_frames(lying) == 250  # the duration, not a count that promises 788 hours
    bogus_rate = SimpleNamespace(frames=None, duration=10.0, fps=1e-6, start=0.0)
    assert expected_frames(bogus_rate) is None  # no ETA rather than a wrong one
    # the speed comes from the timestamps of the frames written; a bogus rate adds nothing to the span
    summary = VideoSummary("o.mp4", frames=10, elapsed_s=2.0, span_s=0.4, width=8, height=8, codec="h264",
                           audio_streams=0)
    assert summary.realtime == pytest.approx(0.2) and "0.20x real time" in summary.line()
