"""Where rendered frames go: an OpenCV window, nowhere (null sink) or an H.264 MP4 file (``--record``).

All sinks take RGB uint8 (H, W, 3); the window converts to BGR itself. The window must be created and fed
from one thread, the main one (GUI toolkits want that): the live command drives it from the pipeline's
``main_loop`` hook. OpenCV's GUI build aborts the whole process when it cannot reach a display, so
:func:`check_display` runs before any window call and raises a one-line error instead.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np

from rtsal.errors import RtsalError

NO_DISPLAY = "no display: use --no-window or rtsal video"


class DisplayError(RtsalError, RuntimeError):
    """No display (or no GUI support in OpenCV) for a window."""


def _x11_reachable(display: str, timeout: float = 0.5) -> bool:
    """Whether an X server listens at ``display`` (``:0``, ``unix:0``, ``host:0.0``), without a client."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix") or host.startswith("/"):
        if host.startswith("/"):  # a launchd socket path (XQuartz)
            return os.path.exists(display)
        return os.path.exists(f"/tmp/.X11-unix/X{number}") or _abstract_socket(f"/tmp/.X11-unix/X{number}")
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=timeout):
            return True
    except OSError:
        return False


def _abstract_socket(path: str) -> bool:
    """Linux X servers also listen on an abstract socket of the same name."""
    if not sys.platform.startswith("linux"):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect("\0" + path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def display_problem(env: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """None when a window can be shown, else why not (checked without touching OpenCV's GUI)."""
    env = dict(os.environ) if env is None else env
    platform = sys.platform if platform is None else platform
    if platform.startswith(("win", "darwin")):
        return None
    if env.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc"):
        return None
    display = env.get("DISPLAY", "")
    if display and _x11_reachable(display):
        return None
    if env.get("WAYLAND_DISPLAY") and display:
        return None
    if display:
        return f"{NO_DISPLAY} (cannot reach the X display {display!r})"
    return NO_DISPLAY


def gui_problem(build_information: str | None = None) -> str | None:
    """None when this OpenCV build has a GUI, else how to repair it (one line).

    ``opencv-python-headless`` (pulled in by some other packages) shares the ``cv2`` package with
    ``opencv-python`` and, installed after it, replaces the GUI build with one that cannot open a window."""
    if build_information is None:
        import cv2

        build_information = cv2.getBuildInformation()
    for line in build_information.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GUI":
            if value.strip().upper() in ("NONE", ""):
                return (
                    "this OpenCV has no GUI (opencv-python-headless replaced opencv-python); repair it with "
                    "`pip uninstall -y opencv-python-headless && pip install --force-reinstall --no-deps "
                    "opencv-python`, or use --no-window"
                )
            return None
    return None


def check_display() -> None:
    """Raise :class:`DisplayError` when no window can be shown (no display, or an OpenCV without a GUI)."""
    problem = display_problem() or gui_problem()
    if problem:
        raise DisplayError(problem)


def check_import_order() -> None:
    """Raise when PyAV was imported before OpenCV: the libraries PyAV's wheel bundles (its own libxcb) are
    then found first by OpenCV's Qt xcb plugin, and ``cv2.namedWindow`` spins forever instead of opening."""
    names = list(sys.modules)
    if "av" in sys.modules and ("cv2" not in sys.modules or names.index("av") < names.index("cv2")):
        raise DisplayError("PyAV was imported before OpenCV, so an OpenCV window would hang: "
                           "import cv2 first")


class Window:
    """An OpenCV window (``cv2.imshow``); create, show and poll it from one thread (the main one).

    Import ``cv2`` before ``av`` in a process that opens a window (see :func:`check_import_order`).
    """

    def __init__(self, title: str = "rtsal") -> None:
        check_display()
        check_import_order()
        import cv2

        self.title = title
        try:
            # GUI_NORMAL: no Qt toolbar or status bar (their zoom and save buttons take keys and space)
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no GUI"
            raise DisplayError(f"this OpenCV build cannot open windows ({msg}): use --no-window") from None
        self._shown = False
        self._open = True

    def show(self, rgb: np.ndarray) -> None:
        import cv2

        cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self._shown = True

    def poll_key(self, delay_ms: int = 1) -> int:
        """Run the GUI event loop for ``delay_ms`` and return the key pressed (-1 for none)."""
        import cv2

        return cv2.waitKey(delay_ms)

    def closed_by_user(self) -> bool:
        """True once the user closed the window with its title-bar button."""
        import cv2

        if not self._shown:
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        import cv2

        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink:
    """Discards frames (``--no-window``)."""

    def show(self, rgb: np.ndarray) -> None:
        pass

    def poll_key(self, delay_ms: int = 1) -> int:
        return -1

    def closed_by_user(self) -> bool:
        return False

    def close(self) -> None:
        pass


def letterbox(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``rgb`` to fit ``size`` = (width, height), keeping its aspect ratio, centred on black."""
    import cv2

    W, H = size
    h, w = rgb.shape[:2]
    s = min(W / w, H / h)
    nw, nh = max(1, min(W, round(w * s))), max(1, min(H, round(h * s)))
    out = np.zeros((H, W, 3), np.uint8)
    y, x = (H - nh) // 2, (W - nw) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


class Mp4Recorder:
    """``--record``: what the window shows, as an H.264 (yuv420p) video, written by
    :class:`rtsal.io.video.VideoWriter` (PyAV; odd sizes padded; variable frame rate kept; always flushed).

    Each frame carries its own time in seconds, so a live run plays back at the speed it was seen. A frame of
    another size than the first (the view was switched) is letterboxed into the first one's size. The path
    is checked, and the file opened, at construction: a bad path fails before any work starts.
    """

    def __init__(self, path: str | Path, fps: float = 30.0, crf: int = 23, preset: str = "veryfast") -> None:
        from rtsal.io.video import VideoWriter, check_output_path

        self.path = Path(path)
        check_output_path(self.path)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self._writer = None
        self._args = {"crf": crf, "preset": preset}
        self._make = VideoWriter
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray, t: float | None = None) -> None:
        """Append one RGB uint8 frame shown at ``t`` seconds from the start (default: the nominal rate)."""
        h, w = rgb.shape[:2]
        if self._writer is None:
            self._writer = self._make(self.path, "libx264", rate=self.fps, pix_fmt="yuv420p", **self._args)
            self._size = (w, h)
        elif (w, h) != self._size:
            rgb = letterbox(rgb, self._size)
        self._writer.write(rgb, pts=t if t is not None else self.frames / self.fps)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent); with no frame written, no file is left."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self) -> Mp4Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
