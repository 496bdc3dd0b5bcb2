"""PyAV reader and writer on clips written in the test: timestamps (VFR), odd sizes, audio copy, rotation,
pixel formats, trimming, damaged files, and the side outputs (maps .npz)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from helpers import AUDIO_RATE, copy_video, make_clip, probe, vfr_times

from rtsal.errors import VideoIOError
from rtsal.io.maps import MapsWriter
from rtsal.io.video import AudioSource, VideoReader, VideoWriter, check_codec, check_output_path


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    path = tmp_path_factory.mktemp("clips") / "vfr_odd.mp4"
    return path, make_clip(path)


# -- reading -------------------------------------------------------------------------------------------------
def test_reader_info_and_frames(vfr_clip):
    path, truth = vfr_clip
    times, last = vfr_times()
    with VideoReader(path) as r:
        info = r.info
        frames = list(r)
    assert (info.width, info.height) == (161, 121)
    assert info.frames == 30 and info.rotation == 0 and info.audio_streams == 1
    assert info.codec == "mpeg4" and info.bit_depth == 8
    assert info.duration == pytest.approx((times[-1] + last) / 1000, abs=0.002)
    assert info.fps == pytest.approx(30 / info.duration, rel=0.01)
    assert [f.index for f in frames] == list(range(30))
    assert [f.pts for f in frames] == pytest.approx([t / 1000 for t in times])
    # each frame lasts until the next one; the last one until the stream ends
    assert [f.extra for f in frames[:-1]] == pytest.approx(np.diff(times) / 1000)
    assert frames[-1].extra == pytest.approx(last / 1000, abs=0.002)
    for f, img in zip(frames, truth, strict=True):
        assert f.image.shape == (121, 161, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
        assert np.abs(f.image.astype(int) - img).mean() < 5  # 4:2:0 chroma on a detailed photo


@pytest.mark.parametrize(
    ("rotation", "corner"), [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")]
)
def test_reader_applies_rotation(tmp_path, rotation, corner):
    """A display matrix (phone videos) is applied: the frames come out as they should be shown."""
    img = np.zeros((120, 160, 3), np.uint8)
    img[:30, :40] = 255  # a white block in the top-left corner of the stored frame
    path = tmp_path / "rot.mp4"
    make_clip(
        path, 160, 120, [0, 100, 200], codec="libx264", audio=False, rotation=rotation, frames=[img] * 3
    )
    with VideoReader(path) as r:
        frame = next(iter(r)).image
        info = r.info
    assert info.rotation == rotation % 360
    h, w = frame.shape[:2]
    assert (info.width, info.height) == (w, h) == ((120, 160) if rotation % 180 else (160, 120))
    ys, xs = np.nonzero(frame[..., 0] > 128)
    vertical, horizontal = corner.split("-")
    assert (ys.max() < h // 2) == (vertical == "top")
    assert (xs.max() < w // 2) == (horizontal == "left")


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "ext", "depth"),
    [
        ("libx264", "yuv420p10le", "mkv", 10),
        ("ffv1", "gray", "mkv", 8),
        ("libx264", "yuv444p", "mp4", 8),
        ("ffv1", "gray16le", "mkv", 16),
    ],
)
def test_reader_converts_pixel_formats_to_rgb(tmp_path, codec, pix_fmt, ext, depth):
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :48] = 200
    img[:, 48:] = 40
    path = tmp_path / f"f.{ext}"
    make_clip(path, 96, 64, [0, 40], codec=codec, pix_fmt=pix_fmt, audio=False, frames=[img, img])
    with VideoReader(path) as r:
        assert r.info.pix_fmt == pix_fmt and r.info.bit_depth == depth
        frame = next(iter(r)).image
    assert frame.dtype == np.uint8 and frame.shape == (64, 96, 3)
    assert np.abs(frame[:, 4:40].astype(int) - 200).max() <= 4
    assert np.abs(frame[:, 56:92].astype(int) - 40).max() <= 4


def test_reader_start_end(vfr_clip):
    path, _ = vfr_clip
    times, _ = vfr_times()
    with VideoReader(path, start=1.0, end=2.0) as r:
        frames = list(r)
    want = [t / 1000 for t in times if 1.0 <= t / 1000 < 2.0]
    assert [f.pts for f in frames] == pytest.approx(want)
    nxt = min(t / 1000 for t in times if t / 1000 >= 2.0)
    assert frames[-1].extra == pytest.approx(nxt - want[-1])


def test_reader_refuses_what_is_not_a_video(tmp_path):
    with pytest.raises(VideoIOError, match="no such file"):
        VideoReader(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoIOError, match="not a video file"):
        VideoReader(text)
    audio_only = tmp_path / "a.m4a"
    with av.open(str(audio_only), "w") as c:
        a = c.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        af.sample_rate, af.pts = AUDIO_RATE, 0
        for p in [*a.encode(af), *a.encode()]:
            c.mux(p)
    with pytest.raises(VideoIOError, match="has no video stream"):
        VideoReader(audio_only)


# -- damaged files -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def h264_clips(tmp_path_factory) -> dict[str, Path]:
    """A 3 s 15 fps H.264 + AAC clip, written twice: index (moov) at the end, and at the start (faststart)."""
    d = tmp_path_factory.mktemp("h264")
    times = [round(i * 1000 / 15) for i in range(45)]
    clips = {}
    for name, fast in (("moov_end", False), ("faststart", True)):
        clips[name] = d / f"{name}.mp4"
        make_clip(clips[name], 160, 120, times, last_ms=67, codec="libx264", faststart=fast)
    return clips


def test_truncated_moov_at_end_fails_at_open(h264_clips, tmp_path):
    data = h264_clips["moov_end"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoIOError, match=r"without a readable index \(moov\); truncated"):
        VideoReader(cut)


def test_truncated_faststart_decodes_part_way_then_says_where(h264_clips, tmp_path):
    data = h264_clips["faststart"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    got = []
    with (
        VideoReader(cut) as r,
        pytest.raises(VideoIOError, match=r"stopped at \d+\.\d+ s after \d+ frame") as e,
    ):
        for f in r:
            got.append(f)
    assert 5 < len(got) < 45
    assert f"after {len(got)} frame(s)" in str(e.value) and f"{got[-1].pts:.3f} s" in str(e.value)
    assert [f.pts for f in got] == pytest.approx([i / 15 for i in range(len(got))], abs=0.001)


def test_random_bytes_in_the_middle_skip_packets_and_say_so(h264_clips, tmp_path):
    data = bytearray(h264_clips["faststart"].read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    got = []
    with (
        VideoReader(bad) as r,
        pytest.raises(VideoIOError, match="could not be decoded and were skipped") as e,
    ):
        for f in r:
            got.append(f)
    assert 30 < len(got) < 45  # the frames around the damage are lost, all others decode
    assert f"{len(got)} frame(s) decoded" in str(e.value)
    assert np.all(np.diff([f.pts for f in got]) > 0)


# -- writing -------------------------------------------------------------------------------------------------
def test_round_trip_keeps_vfr_timestamps_duration_and_audio(vfr_clip, tmp_path):
    path, _ = vfr_clip
    out = tmp_path / "out.mp4"
    images = copy_video(path, out)
    src, dst = probe(path), probe(out)
    assert dst["codec"] == "h264" and dst["audio_codec"] == "aac"
    assert len(dst["times"]) == 30 and dst["times"] == src["times"]
    assert dst["video_duration"] == pytest.approx(src["video_duration"], abs=1e-3)
    assert dst["audio_samples"] == src["audio_samples"]
    assert dst["audio_duration"] == pytest.approx(src["audio_duration"], abs=1e-6)
    # odd 161x121 padded to 162x122 by copying the edge; the picture itself is unchanged
    assert dst["size"] == (162, 122)
    for a, b in zip(images, dst["images"], strict=True):
        assert np.abs(b[:121, :161].astype(int) - a).mean() < 4
        assert np.abs(b[:121, 161].astype(int) - a[:, 160]).mean() < 8


def test_b_frames_and_cfr_keep_duration(h264_clips, tmp_path):
    """x264's B-frames shift decode times; the container duration still ends where the last frame ends."""
    src = h264_clips["moov_end"]
    out = tmp_path / "out.mp4"
    copy_video(src, out, preset="medium")
    a, b = probe(src), probe(out)
    assert b["times"] == a["times"] and len(b["times"]) == 45
    assert b["video_duration"] == pytest.approx(a["video_duration"], abs=1e-3)
    assert b["audio_samples"] == a["audio_samples"]


def test_trim_shifts_video_and_audio_together(vfr_clip, tmp_path):
    path, _ = vfr_clip
    times, _ = vfr_times()
    out = tmp_path / "trim.mp4"
    with VideoReader(path, start=1.0, end=2.0) as r:
        audio = AudioSource(str(path), start=1.0, end=2.0, offset=1.0)
        with VideoWriter(out, rate=r.info.rate, time_base=r.info.time_base, offset=1.0, audio=audio) as w:
            for f in r:
                w.write(f.image, f.pts, f.extra)
    got = probe(out)
    want = [round(t / 1000 - 1.0, 6) for t in times if 1.0 <= t / 1000 < 2.0]
    assert got["times"] == pytest.approx(want, abs=1e-6)
    aac_frame = 1024 / AUDIO_RATE
    assert got["audio_duration"] == pytest.approx(1.0, abs=2 * aac_frame)


@pytest.mark.parametrize(("codec", "ext"), [("mpeg4", "avi"), ("libvpx-vp9", "mkv"), ("mjpeg", "mov")])
def test_other_codecs_and_containers(vfr_clip, tmp_path, codec, ext):
    path, _ = vfr_clip
    out = tmp_path / f"out.{ext}"
    copy_video(path, out, codec=codec)
    got = probe(out)
    assert len(got["times"]) == 30 and got["audio_streams"] == 1
    if ext != "avi":  # AVI stores frame numbers, not times: its rate quantises the VFR timestamps
        # Matroska shifts every stream so that AAC's priming (negative pts) starts at 0: compare intervals
        want = probe(path)["times"]
        assert np.allclose(np.subtract(got["times"], got["times"][0]), want, atol=1e-3)


def test_writer_checks_before_any_frame(vfr_clip, tmp_path):
    path, _ = vfr_clip
    with pytest.raises(VideoIOError, match="unknown video encoder 'nonesuch'"):
        check_codec("nonesuch")
    with pytest.raises(VideoIOError, match="audio encoder, not a video encoder"):
        check_codec("aac")
    with pytest.raises(VideoIOError, match="does not exist"):
        VideoWriter(tmp_path / "no" / "such" / "dir.mp4")
    with pytest.raises(VideoIOError, match="is the input file"):
        check_output_path(path, path)
    with pytest.raises(VideoIOError, match="is a directory"):
        VideoWriter(tmp_path)
    with pytest.raises(VideoIOError, match="no container format"):
        VideoWriter(tmp_path / "out.nonesuch")
    with pytest.raises(VideoIOError, match="cannot hold the input's aac audio"):
        VideoWriter(tmp_path / "out.webm", "libvpx-vp9", audio=AudioSource(str(path)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VideoIOError, match="not a directory"):
        check_output_path(blocker / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created on the way


def test_writer_finishes_the_file_when_an_error_escapes(vfr_clip, tmp_path):
    path, truth = vfr_clip
    out = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoReader(path) as r:
        audio = AudioSource(str(path))
        with VideoWriter(out, rate=r.info.rate, time_base=r.info.time_base, audio=audio) as w:
            for f in r:
                w.write(f.image, f.pts, f.extra)
                if f.index == 11:
                    raise RuntimeError("boom")
    got = probe(out)
    times, _ = vfr_times()
    assert got["times"] == [t / 1000 for t in times[:12]]
    # the audio stops where the last written frame ends, not at the end of the input
    assert got["audio_duration"] == pytest.approx(times[12] / 1000, abs=2 * 1024 / AUDIO_RATE)


def test_writer_without_frames_touches_no_file(tmp_path):
    out = tmp_path / "empty.mp4"
    with VideoWriter(out):
        pass
    assert not out.exists()
    out.write_bytes(b"an older output")
    with pytest.raises(RuntimeError), VideoWriter(out):
        raise RuntimeError("failed before the first frame")
    assert out.read_bytes() == b"an older output"


def test_writer_never_fails_on_odd_sizes(tmp_path):
    for w, h in ((33, 17), (64, 9), (10, 64)):
        out = tmp_path / f"{w}x{h}.mp4"
        with VideoWriter(out) as wr:
            for i in range(3):
                wr.write(np.full((h, w, 3), 60 * i, np.uint8), i / 10)
        got = probe(out)
        assert got["size"] == (w + w % 2, h + h % 2) and got["times"] == [0.0, 0.1, 0.2]


# -- side outputs --------------------------------------------------------------------------------------------
def test_maps_writer_round_trip(tmp_path):
    path = tmp_path / "maps.npz"
    rng = np.random.default_rng(0)
    maps = rng.random((7, 3, 12, 20)).astype(np.float16)
    with MapsWriter(path, meta={"model": "m", "layers": ["a", "b", "c"]}) as mw:
        for i in range(7):
            mw.add(pts=i / 25, scales=maps[i], index=i)
    z = np.load(path)
    assert z["scales"].shape == (7, 3, 12, 20) and z["scales"].dtype == np.float16
    assert np.array_equal(z["scales"], maps)
    assert np.array_equal(z["pts"], np.arange(7) / 25) and z["index"].tolist() == list(range(7))
    assert str(z["model"]) == "m" and z["layers"].tolist() == ["a", "b", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["maps.npz"]  # temporaries gone
    with MapsWriter(tmp_path / "e.npz") as mw, pytest.raises(ValueError, match="shape"):
        mw.add(a=np.zeros(3))
        mw.add(a=np.zeros(4))
