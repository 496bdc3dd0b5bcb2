"""Live frame sources: a camera by index (OpenCV) and ``--source FILE|URL|PATTERN`` (PyAV; globs: OpenCV).

A source is an iterable of :class:`rtsal.types.Frame` (RGB uint8) with ``close()``; the pipeline iterates it
on its capture thread and calls ``close()`` when capture ends, which releases the camera or closes the file.
``live`` says which channel the pipeline should use: a latest-frame slot (camera, URL, a file played in real
time) or a bounded queue with no drops (a file read as fast as possible).
"""

from __future__ import annotations

import glob
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# OpenCV before PyAV, always: a window cannot open once PyAV's bundled libxcb is loaded (see rtsal.io.sinks)
import cv2
import numpy as np

from rtsal.errors import CaptureError, UsageError, VideoIOError
from rtsal.types import Frame

URL_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def is_url(source: str) -> bool:
    return source.lower().startswith(URL_PREFIXES)


def _quiet_opencv():
    """Silence OpenCV's log lines (a missing camera prints several); returns a function that restores them."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        return lambda: None
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    return lambda: logging.setLogLevel(previous)


class CameraSource:
    """Frames from camera ``index`` via ``cv2.VideoCapture``; the requested size and rate are honoured where
    the camera allows (``size`` and ``fps`` report what it gives). :class:`CaptureError` when it cannot open.

    ``max_failures`` consecutive failed reads (a camera unplugged) end the stream with a CaptureError.
    """

    live = True

    def __init__(self, index: int, width: int | None = None, height: int | None = None,
                 fps: float | None = None, max_failures: int = 50) -> None:
        if index < 0:
            raise UsageError(f"--camera must be 0 or more, got {index}")
        self.index = index
        self.name = f"camera {index}"
        self.max_failures = max_failures
        restore = _quiet_opencv()
        try:
            cap = cv2.VideoCapture(index)
            opened = cap.isOpened()
        finally:
            restore()
        if not opened:
            cap.release()
            raise CaptureError(f"cannot open camera {index}: no such camera, or it is busy or not permitted")
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        self._cap = cap
        self._lock = threading.Lock()
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS)) or None

    def __iter__(self) -> Iterator[Frame]:
        failures = 0
        index = 0
        t0 = None
        while True:
            with self._lock:
                if self._cap is None:
                    return
                ok, bgr = self._cap.read()
            now = time.perf_counter()
            if not ok or bgr is None:
                failures += 1
                if failures >= self.max_failures:
                    raise CaptureError(f"camera {self.index} stopped delivering frames")
                time.sleep(0.01)
                continue
            failures = 0
            t0 = now if t0 is None else t0
            yield Frame(index, now - t0, now, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1

    def close(self) -> None:
        """Release the camera (idempotent)."""
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    @property
    def closed(self) -> bool:
        return self._cap is None

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamSource:
    """Frames from a video file (:class:`rtsal.io.video.VideoReader`), a URL (anything FFmpeg opens), an
    FFmpeg image pattern (``img_%04d.png``) or a glob of image files (``frames/*.jpg``), decoded on the
    thread that iterates it.

    ``realtime=True`` paces a file at its own frame rate (as a camera would deliver it); URLs are always live.
    ``fps`` sets the rate of a glob (default 30) and overrides an unknown file rate.
    """

    def __init__(self, source: str, realtime: bool = True, fps: float | None = None) -> None:
        self.source = source
        self.name = source
        self.realtime = realtime
        self.url = is_url(source)
        self.live = self.url or realtime
        self._closed = False
        self._container = None
        self._files: list[str] | None = None
        self._reader = None
        self.fps: float | None = fps
        if any(ch in source for ch in "*?[") and not self.url:
            self._files = sorted(glob.glob(source))
            if not self._files:
                raise VideoIOError(f"no files match {source}")
            self.fps = fps or 30.0
            return
        if not self.url and "%" not in source:
            from rtsal.io.video import VideoReader  # files: rotation, any pixel format, damage reported

            self._reader = VideoReader(source)
            self.fps = self.fps or self._reader.info.fps or 30.0
            self.size = (self._reader.info.width, self._reader.info.height)
            return
        self._open_av()

    def _open_av(self) -> None:
        import av

        options = {"format": "image2"} if "%" in self.source and not self.url else {}
        try:
            container = av.open(self.source, mode="r", timeout=10.0 if self.url else None, **options)
        except Exception as exc:  # av.error.* subclasses OSError/ValueError; all mean "cannot open"
            kind = CaptureError if self.url else VideoIOError
            raise kind(f"cannot open {self.source}: {_av_message(exc)}") from None
        if not container.streams.video:
            container.close()
            raise VideoIOError(f"{self.source} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.fps = self.fps or (float(rate) if rate else None) or 30.0
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self._container = container

    def __iter__(self) -> Iterator[Frame]:
        if self._files is not None:
            frames = self._glob_frames()
        elif self._reader is not None:
            frames = ((f.pts, f.image) for f in self._reader)
        else:
            frames = self._av_frames()
        t_start: float | None = None
        first_pts: float | None = None
        for index, (pts, image) in enumerate(frames):
            now = time.perf_counter()
            if self.realtime and not self.url:
                if t_start is None:
                    t_start, first_pts = now, pts
                due = t_start + (pts - first_pts)
                if due > now:
                    time.sleep(due - now)
                    now = time.perf_counter()
            yield Frame(index, pts, now, image)

    def _glob_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        from rtsal.io.images import read_rgb

        for k, path in enumerate(self._files or ()):
            if self._closed:
                return
            yield k / self.fps, read_rgb(Path(path))

    def _av_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        container = self._container
        if container is None:
            return
        stream = container.streams.video[0]
        k = 0
        try:
            for frame in container.decode(stream):
                if self._closed:
                    return
                pts = float(frame.pts * stream.time_base) if frame.pts is not None else k / self.fps
                yield pts, frame.to_ndarray(format="rgb24")
                k += 1
        except Exception as exc:
            if self._closed:
                return
            raise VideoIOError(f"cannot decode {self.source} after frame {k}: {_av_message(exc)}") from None

    def close(self) -> None:
        """Close the file or stream (idempotent)."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()
        if self._container is not None:
            self._container.close()
            self._container = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> StreamSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _av_message(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0]


def open_source(camera: int = 0, source: str | None = None, realtime: bool = True, width: int | None = None,
                height: int | None = None, fps: float | None = None) -> CameraSource | StreamSource:
    """``--source`` when given, else camera ``camera``."""
    if source is not None:
        return StreamSource(source, realtime=realtime, fps=fps)
    return CameraSource(camera, width=width, height=height, fps=fps)
