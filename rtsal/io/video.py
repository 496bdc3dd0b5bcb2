"""Video files with PyAV: a reader (decode, timestamps, rotation, any pixel format to RGB) and a writer
(encode, odd sizes, original timestamps, audio copied packet by packet, always flushed and closed).

Frames are RGB uint8 (H, W, 3) on both sides. Times are seconds (float) at the boundary; inside, the
writer keeps integer ticks in a fine time base so variable frame rates survive the round trip.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from rtsal.errors import UsageError, VideoIOError
from rtsal.outputs import AtomicPath, check_outputs
from rtsal.types import Frame

DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 23
# x264's superfast: at crf 23 on a 720p overlay video, 40% less encoder CPU than veryfast (16 against 27 ms a
# frame) for files about 20% larger (benchmarks/pipeline_backends.py, docs/backends.md); the encoder was the
# second dearest stage of ``rtsal video`` after the model
DEFAULT_PRESET = "superfast"
X264_LIKE = ("libx264", "libx264rgb", "libx265")
# encoders whose time base denominator must stay below 2**16 (MPEG-4 part 2 and older)
SHORT_TIME_BASE = ("mpeg4", "mpeg2video", "mpeg1video", "msmpeg4", "msmpeg4v2", "h263", "h263p", "flv")


def _reason(exc: BaseException) -> str:
    """The useful part of a PyAV error: its strerror without the file name repeated."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().rstrip(".")


# ---------------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``width``/``height`` are as displayed, after ``rotation`` is applied."""

    path: str
    width: int
    height: int
    fps: float  # average frame rate (frames/s); 0.0 when the file does not say
    rate: Fraction | None  # the same as an exact fraction, None when unknown
    frames: int | None  # frame count when the container knows it
    duration: float | None  # seconds, from the first frame's start to the last frame's end
    start: float  # presentation time of the first frame, seconds
    rotation: int  # degrees counter-clockwise applied to every decoded frame (0, 90, 180, 270)
    codec: str
    pix_fmt: str
    time_base: Fraction  # of the video stream
    audio_streams: int
    bit_depth: int


def _rotation(frame: av.VideoFrame) -> int:
    """The display-matrix rotation of a decoded frame as 0/90/180/270 degrees counter-clockwise."""
    try:
        deg = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return int(round((deg or 0) / 90.0)) % 4 * 90


def _bit_depth(frame: av.VideoFrame) -> int:
    try:
        return max(c.bits for c in frame.format.components)
    except (AttributeError, ValueError):
        return 8


class VideoReader:
    """Decode a video file into :class:`Frame` objects (RGB uint8, upright, pts in seconds).

    Opening checks the file and decodes the first frame, so a file that is not a video fails here, before
    any work starts. Iterate once; every frame that decodes is yielded. When decoding stops early (a
    truncated or corrupt file) iteration raises :class:`VideoIOError` after the last good frame, saying
    where. Each ``Frame.extra`` is the frame's duration in seconds (up to the next frame).

    Args:
        path: the video file.
        start, end: only frames with ``start <= pts < end`` (seconds); ``None`` for the file's own ends.
        thread_type: PyAV decoder threading: ``"AUTO"`` (frame and slice threads), ``"FRAME"``, ``"SLICE"``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        start: float | None = None,
        end: float | None = None,
        thread_type: str = "AUTO",
    ) -> None:
        self.path = Path(path)
        if start is not None and start < 0:
            raise UsageError(f"start must be >= 0 seconds, got {start}")
        if end is not None and start is not None and end <= start:
            raise UsageError(f"end ({end} s) must come after start ({start} s)")
        if not self.path.exists():
            raise VideoIOError(f"no such file: {self.path}")
        if not self.path.is_file():
            raise VideoIOError(f"not a file: {self.path}")
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise VideoIOError(f"cannot open {self.path}: {_not_a_video(self.path, exc)}") from None
        except OSError as exc:
            raise VideoIOError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        try:
            self._setup(start, end, thread_type)
        except BaseException:
            self._container.close()
            raise

    def _setup(self, start: float | None, end: float | None, thread_type: str) -> None:
        c = self._container
        if not c.streams.video:
            raise VideoIOError(f"{self.path} has no video stream")
        s = c.streams.video[0]
        s.thread_type = thread_type
        self._stream = s
        self.start, self.end = start, end
        self.stopped: str | None = None  # why decoding ended early, once it has
        self._truncated_ts = False
        self._decoded = 0
        self._last_time: float | None = None
        self._corrupt = 0  # packets the decoder refused
        self._disordered = 0  # frames whose pts did not increase (dropped: the output must be monotonic)
        self._first_error: tuple[float | None, str] | None = None
        self._next_time: float | None = None  # time of the first frame past ``end``
        tb = s.time_base or Fraction(1, 90000)
        self._tb = tb
        rate = s.average_rate or s.guessed_rate or s.base_rate
        self._period = float(1 / rate) if rate else 1.0 / 25.0
        if start:
            try:
                c.seek(int(start / tb) + (s.start_time or 0), stream=s, backward=True, any_frame=False)
            except av.FFmpegError:
                c.seek(0, stream=s)
        self._raw = self._decode()
        first = next(self._raw, None)
        if first is None:
            detail = f": {self.stopped}" if self.stopped else ""
            where = f" at or after {start} s" if start else ""
            raise VideoIOError(f"cannot decode any video frame of {self.path}{where}{detail}")
        self._first = first
        self._size = (first.width, first.height)
        self.rotation = _rotation(first)
        w, h = (first.height, first.width) if self.rotation in (90, 270) else (first.width, first.height)
        duration = None
        if s.duration is not None:
            duration = float(s.duration * tb)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        t0 = float((s.start_time or 0) * tb)
        self._file_end = t0 + duration if duration else None
        # where the video stream must end, for containers whose index says so exactly
        indexed = any(k in c.format.name for k in ("mov", "mp4", "matroska", "webm"))
        self._indexed_end = t0 + float(s.duration * tb) if indexed and s.duration else None
        self._end_slack = 0.0
        if self._indexed_end is None and "matroska" in c.format.name and c.duration:
            # Matroska keeps one duration for the whole file (every stream): allow an audio track that runs on
            self._indexed_end = c.duration / av.time_base
            self._end_slack = max(0.5, 0.1 * self._indexed_end)
        if "mpegts" in c.format.name and self.path.stat().st_size % 188:
            # a transport stream is a sequence of 188-byte packets: a file that ends inside one was cut short
            self._truncated_ts = True
        self.info = VideoInfo(
            path=str(self.path),
            width=w,
            height=h,
            fps=float(rate) if rate else 0.0,
            rate=Fraction(rate) if rate else None,
            frames=s.frames or None,
            duration=duration,
            start=t0,
            rotation=self.rotation,
            codec=s.codec_context.name,
            pix_fmt=first.format.name,
            time_base=tb,
            audio_streams=len(c.streams.audio),
            bit_depth=_bit_depth(first),
        )
        self._iterated = False

    # -- lifetime ---------------------------------------------------------------------------------------
    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        try:
            self._raw.close()
        except ValueError:  # still running in another thread: closing the container ends it
            pass
        self._container.close()

    # -- decoding ---------------------------------------------------------------------------------------
    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order; demux errors end the stream, decode errors skip a packet."""
        c, s = self._container, self._stream
        packets = c.demux(s)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                self.stopped = _reason(exc)
                # drain what the decoder still holds
                try:
                    yield from s.decode(None)
                except av.FFmpegError:
                    pass
                return
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                self._corrupt += 1
                if self._first_error is None:
                    self._first_error = (self._last_time, _reason(exc))
                continue
            yield from frames

    def _time(self, frame: av.VideoFrame) -> float:
        if frame.pts is None:
            return (self._last_time + self._period) if self._last_time is not None else 0.0
        return float(frame.pts * self._tb)

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        if (frame.width, frame.height) != self._size:  # a mid-stream size change: keep the first size
            frame = frame.reformat(width=self._size[0], height=self._size[1])
        image = frame.to_ndarray(format="rgb24")  # rows may be padded (odd widths): made contiguous below
        if self.rotation:
            image = np.rot90(image, k=self.rotation // 90)
        return np.ascontiguousarray(image)

    def _timed(self) -> Iterator[tuple[av.VideoFrame, float]]:
        """Frames within [start, end) with their times; pts that go backwards are dropped as corrupt."""
        pending: list[av.VideoFrame] = [self._first]
        for frame in _chain(pending, self._raw):
            t = self._time(frame)
            if self.start is not None and t < self.start - 1e-6:
                continue
            if self.end is not None and t >= self.end - 1e-9:
                self._next_time = t
                return
            if self._last_time is not None and t <= self._last_time:
                self._disordered += 1
                continue
            self._last_time = t
            yield frame, t

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError("a VideoReader can be iterated once")
        self._iterated = True
        index = 0
        held: tuple[av.VideoFrame, float, float] | None = None  # one frame of look-ahead gives durations
        for frame, t in self._timed():
            if held is not None:
                yield self._frame(index, held, t - held[1])
                index += 1
            held = (frame, t, time.perf_counter())
        if held is not None:
            last = (
                self._next_time - held[1] if self._next_time is not None else self._last_duration(*held[:2])
            )
            self._check_end(held[1] + last)
            yield self._frame(index, held, last)
            index += 1
        self._decoded = index
        self._raise_if_damaged()

    def _frame(self, index: int, held: tuple[av.VideoFrame, float, float], duration: float) -> Frame:
        frame, t, t_capture = held
        return Frame(index=index, pts=t, t_capture=t_capture, image=self._image(frame), extra=duration)

    def _last_duration(self, frame: av.VideoFrame, t: float) -> float:
        """The last frame lasts until the stream's end (when that is sane), else its own or one period."""
        cap = self.end - t if self.end is not None else math.inf
        if (
            self._file_end is not None
            and self.stopped is None
            and 0 < self._file_end - t <= 10 * self._period
        ):
            return min(self._file_end - t, cap)
        if frame.duration and frame.time_base:
            d = float(frame.duration * frame.time_base)
            if 0 < d <= 10 * self._period:
                return min(d, cap)
        return min(self._period, cap)

    def _check_end(self, t_end: float) -> None:
        """A stream that ends without an error well before its index says it should was cut short."""
        if self.stopped is None and self._next_time is None and self._truncated_ts:
            self.stopped = "the file ends inside a 188-byte transport-stream packet (truncated?)"
        if self.stopped is not None or self._next_time is not None or self._indexed_end is None:
            return
        if t_end < self._indexed_end - max(2 * self._period, 0.1, self._end_slack):
            self.stopped = (
                f"the file ends early (truncated?): its video should run to {self._indexed_end:.3f} s"
            )

    def _raise_if_damaged(self) -> None:
        where = f"{self._last_time:.3f} s" if self._last_time is not None else "the start"
        if self.stopped is not None:
            raise VideoIOError(
                f"decoding of {self.path} stopped at {where} after {self._decoded} frame(s): {self.stopped}"
            )
        if self._corrupt:
            t, reason = self._first_error or (None, "")
            first = f"the first after {t:.3f} s" if t is not None else "the first at the start"
            raise VideoIOError(
                f"{self._corrupt} packet(s) of {self.path} could not be decoded and were skipped "
                f"({first}: {reason}); {self._decoded} frame(s) decoded"
            )
        if self._disordered:
            raise VideoIOError(
                f"{self._disordered} frame(s) of {self.path} had timestamps that went backwards and were "
                f"skipped; {self._decoded} frame(s) decoded"
            )


def _not_a_video(path: Path, exc: BaseException) -> str:
    """Why a file does not open, in words: an MP4/MOV without its index is most likely cut short."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        head = b""
    if head[4:8] == b"ftyp":
        return (
            f"{_reason(exc)}: an MP4/MOV file without a readable index (moov); "
            "truncated, or still being written"
        )
    return f"not a video file FFmpeg can read ({_reason(exc)})"


def _chain(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from first
    first.clear()
    yield from rest


# ---------------------------------------------------------------------------------------------------------
# writing


def check_output_path(output: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Check, before any work, that ``output`` can be written and is not the input file (by path or inode);
    nothing is created or opened (a FIFO at the path would block)."""
    check_outputs([input_path], [("output", output)])
    return Path(output)


def check_codec(name: str) -> av.Codec:
    """The video encoder called ``name``, or VideoIOError."""
    try:
        codec = av.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        raise VideoIOError(
            f"unknown video encoder {name!r} (try libx264, libx265, libvpx-vp9, mpeg4, mjpeg)"
        ) from None
    if codec.type != "video":
        raise VideoIOError(f"{name!r} is an {codec.type} encoder, not a video encoder")
    return codec


def _pix_fmt(codec: av.Codec, wanted: str | None) -> str:
    names = [f.name for f in (codec.video_formats or ())]
    if wanted:
        if names and wanted not in names:
            raise VideoIOError(
                f"encoder {codec.name} cannot take pixel format {wanted}: use one of {', '.join(names)}"
            )
        return wanted
    if names and names[0].startswith("yuvj"):  # JPEG-family encoders want full-range YUV
        return names[0]
    if not names or "yuv420p" in names:
        return "yuv420p"
    return names[0]


X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)


def _quality_options(codec: str, crf: float | None, preset: str | None) -> dict[str, str]:
    """Encoder options for a constant-quality encode: x264/x265 take crf and preset, VP8/VP9 crf with no
    bit-rate cap; other encoders keep their own defaults."""
    opts: dict[str, str] = {}
    if codec in X264_LIKE:
        if crf is not None:
            opts["crf"] = f"{crf:g}"
        if preset:
            if preset not in X264_PRESETS:
                choices = ", ".join(X264_PRESETS)
                raise UsageError(f"unknown --preset {preset!r} for {codec}: choose one of {choices}")
            opts["preset"] = preset
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
    elif codec in ("libvpx", "libvpx-vp9") and crf is not None:
        opts.update(crf=f"{crf:g}", b="0")
    return opts


def _subsampling(pix_fmt: str) -> tuple[int, int]:
    """(x, y) chroma subsampling factors of a pixel format: the frame size must be a multiple of them."""
    comps = av.VideoFormat(pix_fmt, 64, 64).components
    if len(comps) < 2:
        return 1, 1
    return max(1, 64 // max(comps[1].width, 1)), max(1, 64 // max(comps[1].height, 1))


@dataclass(frozen=True)
class AudioSource:
    """Copy the audio streams of ``path`` into the output, keeping packets with ``start <= t < end``
    and shifting them by ``-offset`` seconds (the same shift as the video)."""

    path: str
    start: float | None = None
    end: float | None = None
    offset: float = 0.0


class _AudioCopier:
    """Reads audio packets from its own handle on the input and hands them over in time order."""

    def __init__(self, source: AudioSource) -> None:
        self.source = source
        self._container = av.open(source.path, metadata_errors="ignore")
        self.streams = list(self._container.streams.audio)
        self._packets: Iterator[av.Packet] | None = None
        self._next: av.Packet | None = None
        self._done = not self.streams
        self.copied = 0

    def open(self) -> None:
        if self._done:
            return
        if self.source.start:
            try:
                self._container.seek(int(self.source.start * av.time_base), backward=True)
            except av.FFmpegError:
                pass
        self._packets = self._container.demux(*self.streams)

    def _pull(self) -> av.Packet | None:
        while not self._done:
            try:
                p = next(self._packets)  # type: ignore[arg-type]
            except (StopIteration, av.FFmpegError):
                self._done = True
                return None
            if p.pts is None or p.size == 0:
                continue
            t = float(p.pts * p.time_base)
            end = t + float((p.duration or 0) * p.time_base)
            if self.source.start is not None and end <= self.source.start + 1e-9:
                continue
            if self.source.end is not None and t >= self.source.end - 1e-9:
                self._done = True
                return None
            return p
        return None

    def until(self, t: float | None) -> Iterator[av.Packet]:
        """Packets that start before ``t`` seconds (output time; all remaining when None)."""
        while True:
            if self._next is None:
                self._next = self._pull()
                if self._next is None:
                    return
            p = self._next
            if t is not None and float(p.pts * p.time_base) - self.source.offset >= t:
                return
            self._next = None
            if self.source.offset:
                shift = int(round(self.source.offset / p.time_base))
                p.pts -= shift
                if p.dts is not None:
                    p.dts -= shift
            self.copied += 1
            yield p

    def close(self) -> None:
        self._container.close()


class VideoWriter:
    """Encode RGB frames with their timestamps into a video file; copy audio through untouched.

    The video stream is created with the first frame (its size decides the encoder's). Odd sizes are padded
    by one pixel (edge copy) for chroma-subsampled pixel formats, which libx264 and most encoders require.
    :meth:`close` (also on ``with`` exit, on error or Ctrl-C) flushes the encoder, copies the audio that
    belongs to the frames written, and finalises the file so it plays.

    Args:
        path: output file; the container comes from its extension unless ``format`` names one.
        codec: video encoder name (``libx264``, ``libx265``, ``libvpx-vp9``, ``mpeg4``, ...).
        crf, preset: quality and speed for x264/x265 (others ignore them; ``options`` takes any option).
        rate: nominal frame rate (the encoder's rate-control hint; timestamps decide the real timing).
        time_base: tick of the output timestamps; the input's keeps every pts exactly.
        offset: seconds subtracted from every timestamp (``--start``).
        audio: copy these audio streams; None for no audio.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        codec: str = DEFAULT_CODEC,
        *,
        crf: float | None = DEFAULT_CRF,
        preset: str | None = DEFAULT_PRESET,
        pix_fmt: str | None = None,
        rate: Fraction | float | None = None,
        time_base: Fraction | None = None,
        offset: float = 0.0,
        audio: AudioSource | None = None,
        format: str | None = None,
        options: dict[str, str] | None = None,
        threads: int = 0,
    ) -> None:
        self.path = Path(path)
        self._codec = check_codec(codec)
        self._pix_fmt = _pix_fmt(self._codec, pix_fmt)
        self._options = dict(options or {})
        self._options = {**_quality_options(self._codec.name, crf, preset), **self._options}
        self._rate = Fraction(rate).limit_denominator(1001 * 1000) if rate else Fraction(25)
        tb = time_base or Fraction(1, 90000)
        if self._codec.name in SHORT_TIME_BASE and tb.denominator >= 1 << 16:
            tb = Fraction(1, 1000)
        self.time_base = tb
        self.offset = offset
        self._threads = threads
        self.frames = 0
        self.codec_name = self._codec.name
        self._stream: av.VideoStream | None = None
        self._audio_out: list[av.stream.Stream] = []
        self._copier: _AudioCopier | None = None
        self._durations: dict[int, int] = {}
        self._held: av.Packet | None = None
        self._first_dts: int | None = None
        self._first_pts: int | None = None
        self._end_pts = 0
        self._last_pts: int | None = None
        self._closed = False
        check_output_path(self.path)
        # written to a temporary file beside the output and moved into place when finished (rtsal.outputs):
        # the output path holds the old file or a complete new one, never a broken one
        self._atomic = AtomicPath(self.path)
        try:
            # the temporary name keeps the suffix, so the container guessed is the same
            self._container = av.open(str(self._atomic.tmp), "w", format=format)
        except (av.FFmpegError, ValueError) as exc:
            self._atomic.discard()
            raise VideoIOError(
                f"cannot write {self.path}: no container format for {self.path.suffix or 'it'} "
                f"({_reason(exc)}); use .mp4, .mkv, .mov, .webm or .avi"
            ) from None
        try:
            supported = self._container.supported_codecs
            if (
                supported
                and self._codec.name not in supported
                and self._codec.canonical_name not in supported
            ):
                raise VideoIOError(
                    f"{self._container.format.name} files cannot hold {self._codec.name} video; "
                    "choose another --codec or output extension"
                )
            if audio is not None:
                self._copier = _AudioCopier(audio)
                for s in self._copier.streams:
                    name = s.codec_context.name
                    if supported and name not in supported:
                        raise VideoIOError(
                            f"{self._container.format.name} files cannot hold the input's {name} "
                            "audio; use .mkv or .mp4 or --no-audio"
                        )
        except BaseException:
            self._abort()
            raise

    @property
    def audio_streams(self) -> int:
        """How many audio streams are being copied."""
        return len(self._audio_out)

    # -- lifetime ---------------------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # finish what can be finished; the error already on its way is the one to report
            self.close(complete=False)
        except (VideoIOError, av.FFmpegError, OSError):
            pass

    def _abort(self) -> None:
        if self._copier is not None:
            self._copier.close()
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass
        self._atomic.discard()  # an older file at the output path stays
        self._closed = True

    # -- encoding ---------------------------------------------------------------------------------------
    def _open_stream(self, width: int, height: int) -> None:
        sx, sy = _subsampling(self._pix_fmt)
        self._pad = ((-height) % sy, (-width) % sx)
        self.width, self.height = width + self._pad[1], height + self._pad[0]
        s = self._container.add_stream(self._codec.name, rate=self._rate, options=self._options)
        s.width, s.height, s.pix_fmt = self.width, self.height, self._pix_fmt
        cc = s.codec_context
        cc.time_base = self.time_base
        s.time_base = self.time_base
        cc.thread_count = self._threads
        self._yuv = self._pix_fmt.startswith(("yuv", "nv"))
        if self._yuv:
            cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1  # BT.709
            cc.color_range = 2 if self._pix_fmt.startswith("yuvj") else 1
        self._stream = s
        if self._copier is not None:
            try:
                self._audio_out = [self._container.add_stream_from_template(a) for a in self._copier.streams]
                self._audio_index = {a.index: k for k, a in enumerate(self._copier.streams)}
                self._copier.open()
            except (av.FFmpegError, ValueError) as exc:
                self._copier.close()
                self._copier = None
                self._audio_out = []
                raise VideoIOError(f"cannot copy the audio into {self.path}: {_reason(exc)}") from None

    def _to_frame(self, image: np.ndarray) -> av.VideoFrame:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UsageError(f"frames must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        ph, pw = self._pad
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if self._yuv:
            rng = ColorRange.JPEG if self._pix_fmt.startswith("yuvj") else ColorRange.MPEG
            return frame.reformat(format=self._pix_fmt, dst_colorspace=Colorspace.ITU709, dst_color_range=rng)
        return frame.reformat(format=self._pix_fmt)

    def write(self, image: np.ndarray, pts: float | None = None, duration: float | None = None) -> None:
        """Encode one RGB uint8 frame (H, W, 3) shown at ``pts`` seconds for ``duration`` seconds.

        Frames come in presentation order; every frame must have the first frame's size.
        """
        if self._closed:
            raise RuntimeError("this VideoWriter is closed")
        if self._stream is None:
            self._open_stream(image.shape[1], image.shape[0])
        elif (image.shape[1] + self._pad[1], image.shape[0] + self._pad[0]) != (self.width, self.height):
            raise UsageError(f"frame size {image.shape[1]}x{image.shape[0]} differs from the first frame's")
        tb = self.time_base
        period = 1 / self._rate
        if pts is None:
            ticks = 0 if self._last_pts is None else self._last_pts + max(1, round(period / tb))
        else:
            ticks = round((pts - self.offset) / tb)
        if self._last_pts is not None and ticks <= self._last_pts:
            ticks = self._last_pts + 1
        dur = max(1, round((duration if duration and duration > 0 else float(period)) / tb))
        self._last_pts = ticks
        if self._first_pts is None:
            self._first_pts = ticks
        self._end_pts = max(self._end_pts, ticks + dur)
        self._durations[ticks] = dur
        frame = self._to_frame(image)
        frame.pts = ticks
        frame.time_base = tb
        if self._copier is not None:
            for p in self._copier.until(float(ticks * tb)):
                self._mux_audio(p)
        try:
            packets = self._stream.encode(frame)  # type: ignore[union-attr]
        except av.FFmpegError as exc:
            raise VideoIOError(
                f"cannot encode frame {self.frames} into {self.path}: {_reason(exc)}"
            ) from None
        self._mux_video(packets)
        self.frames += 1

    def _mux_audio(self, packet: av.Packet) -> None:
        packet.stream = self._audio_out[self._audio_index[packet.stream_index]]
        self._mux(packet)

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for p in packets:
            if p.pts is not None:
                p.duration = self._durations.pop(p.pts, p.duration)
            if self._first_dts is None:
                self._first_dts = p.dts if p.dts is not None else p.pts
            if self._held is not None:
                self._mux(self._held)
            self._held = p  # the last packet's duration is fixed at the end

    def _mux(self, packet: av.Packet) -> None:
        try:
            self._container.mux(packet)
        except av.FFmpegError as exc:
            raise VideoIOError(f"cannot write {self.path}: {_reason(exc)}") from None
        except OSError as exc:
            raise VideoIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self, complete: bool = True, keep: bool = True) -> None:
        """Flush the encoder, copy the audio (all of it when ``complete``, else up to the last frame's end),
        write the trailer, close the file and move it into place. Idempotent.

        With no frame written, or ``keep=False``, the temporary file is removed and an older file at the
        output path is left as it was."""
        if self._closed:
            return
        self._closed = True
        if self._stream is None or not keep:
            self._abort()
            return
        try:
            self._finish(complete)
        except BaseException:
            self._atomic.discard()
            raise
        self._atomic.commit()

    @property
    def committed(self) -> bool:
        """True once the finished file is at the output path."""
        return self._atomic.committed

    def _finish(self, complete: bool) -> None:
        try:
            try:
                self._mux_video(self._stream.encode(None))  # type: ignore[union-attr]
            except av.FFmpegError as exc:
                raise VideoIOError(f"cannot flush the encoder of {self.path}: {_reason(exc)}") from None
            if self._held is not None:
                p = self._held
                self._held = None
                if p.dts is not None and self._first_dts is not None and self._first_pts is not None:
                    # the container's duration is the sum of decode-order durations: make it end where the
                    # last frame (in presentation order) ends, also with B-frames and a variable frame rate
                    tail = (self._end_pts - self._first_pts) - (p.dts - self._first_dts)
                    p.duration = max(tail, p.duration or 0)
                self._mux(p)
            if self._copier is not None:
                until = None if complete else float(self._end_pts * self.time_base)
                for p in self._copier.until(until):
                    self._mux_audio(p)
        finally:
            if self._copier is not None:
                self._copier.close()
            try:
                self._container.close()
            except (av.FFmpegError, OSError) as exc:
                raise VideoIOError(f"cannot finish {self.path}: {_reason(exc)}") from None
