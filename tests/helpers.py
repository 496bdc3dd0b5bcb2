"""Helpers shared by the tests (a module, not a test file): real photographs, clips written with PyAV,
an independent PyAV probe of what a file holds, and the pipeline's thread names."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from rtsal.io.video import AudioSource, VideoReader, VideoWriter

DATA = Path(__file__).resolve().parents[1] / "rtsal" / "data"
AUDIO_RATE = 44100


def photo(name: str) -> np.ndarray:
    """A bundled photograph as RGB uint8 (H, W, 3)."""
    image = cv2.imread(str(DATA / f"{name}.jpg"))
    assert image is not None, name
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rtsal-")]


def vfr_times(n: int = 30, seed: int = 0) -> tuple[list[int], int]:
    """Frame times in ms with uneven gaps (a variable frame rate) and the last frame's duration."""
    gaps = np.random.default_rng(seed).choice([50, 66, 100, 133], size=n)
    return [0, *np.cumsum(gaps[:-1]).tolist()], int(gaps[-1])


def pan_frames(
    n: int, width: int, height: int, name: str = "coffee", crop: tuple[int, int, int] | None = None
) -> list[np.ndarray]:
    """A camera pan over a bundled photo: ``n`` RGB frames of width x height. The window is the photo's full
    height by default, or ``crop`` = (window width, window height, top row)."""
    img = photo(name)
    h, w = img.shape[:2]
    cw, ch, top = crop if crop is not None else (min(w, int(h * width / height)), h, 0)
    out = []
    for i in range(n):
        x = int(round((w - cw) * i / max(1, n - 1)))
        window = img[top : top + ch, x : x + cw]
        out.append(cv2.resize(window, (width, height), interpolation=cv2.INTER_AREA))
    return out


def make_clip(
    path: Path,
    width: int = 161,
    height: int = 121,
    times_ms: list[int] | None = None,
    last_ms: int = 100,
    codec: str = "mpeg4",
    audio: bool = True,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    faststart: bool = False,
    frames: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Write a clip (time base 1 ms, given frame times, a 440 Hz AAC track as long as the video); return the
    RGB frames that went in. mpeg4 accepts odd sizes, which libx264 refuses."""
    if times_ms is None:
        times_ms, last_ms = vfr_times()
    frames = frames if frames is not None else pan_frames(len(times_ms), width, height)
    tb = Fraction(1, 1000)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        v = c.add_stream(codec, rate=15)
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        v.bit_rate = 4_000_000  # mpeg4's default 200 kb/s blurs too much to compare pixels
        v.codec_context.time_base = v.time_base = tb
        if rotation is not None:
            v.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        ends = [*times_ms[1:], times_ms[-1] + last_ms]
        durations = {int(t): int(e - t) for t, e in zip(times_ms, ends, strict=True)}
        packets = []
        for img, t in zip(frames, times_ms, strict=True):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = int(t), tb
            packets += v.encode(f)
        for p in [*packets, *v.encode()]:
            p.duration = durations.get(p.pts, p.duration)  # exact for encoders without B-frames (mpeg4)
            c.mux(p)
        if a is not None:
            n = int((times_ms[-1] + last_ms) / 1000 * AUDIO_RATE)
            pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / AUDIO_RATE)).astype(np.float32)
            for k in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(pcm[None, k : k + 1024], format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = AUDIO_RATE, k, Fraction(1, AUDIO_RATE)
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return frames


def probe(path: Path) -> dict:
    """What an independent PyAV decode of a file finds: frame times, sizes, durations, audio samples."""
    out: dict = {}
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        out["times"] = [round(float(f.pts * f.time_base), 6) for f in frames]
        out["size"] = (frames[0].width, frames[0].height) if frames else None
        out["video_duration"] = float(v.duration * v.time_base) if v.duration else None
        out["images"] = [f.to_ndarray(format="rgb24") for f in frames]
        out["codec"] = v.codec_context.name
    with av.open(str(path)) as c:
        out["audio_streams"] = len(c.streams.audio)
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = 0
            for packet in c.demux(a):
                try:  # a player skips a damaged packet; so does this count
                    samples += sum(f.samples for f in packet.decode())
                except av.InvalidDataError:
                    out["audio_errors"] = out.get("audio_errors", 0) + 1
            out["audio_samples"] = samples
            # Matroska keeps no per-stream duration: then the decoded length
            out["audio_duration"] = float(a.duration * a.time_base) if a.duration else samples / a.sample_rate
            out["audio_codec"] = a.codec_context.name
    return out


def copy_video(src: Path, dst: Path, **writer_kw) -> list[np.ndarray]:
    """Read ``src`` and write every frame to ``dst`` with its timestamp and audio; the frames read."""
    images = []
    with VideoReader(src) as r:
        audio = AudioSource(str(src)) if r.info.audio_streams else None
        with VideoWriter(dst, rate=r.info.rate, time_base=r.info.time_base, audio=audio, **writer_kw) as w:
            for f in r:
                images.append(f.image)
                w.write(f.image, f.pts, f.extra)
    return images


def write_clip(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """A constant-rate H.264 clip of ``frames`` (no audio)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        for k, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = k
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of a file (RGB) and its time in seconds."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        return [f.to_ndarray(format="rgb24") for f in frames], [float(f.pts * s.time_base) for f in frames]


def hook_count(model) -> int:
    """Forward hooks and pre-hooks left on every module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def all_photos() -> list[np.ndarray]:
    """Every bundled photo (rtsal/data and rtsal/data/eval), RGB uint8."""
    names = sorted(p for p in DATA.glob("*.jpg")) + sorted((DATA / "eval").glob("*.jpg"))
    return [photo(str(p.relative_to(DATA).with_suffix(""))) for p in names]


def maps_agree(a, b) -> None:
    """Two engines' maps agree: same shape, max |diff| <= 0.01, correlation >= 0.999 (unless constant)."""
    import torch

    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= 0.01
    fa, fb = a.flatten().double(), b.flatten().double()
    if fb.std() > 1e-6:
        assert float(torch.corrcoef(torch.stack([fa, fb]))[0, 1]) >= 0.999
