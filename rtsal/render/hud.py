"""The live HUD: what it costs to see the explanation, drawn over the frame.

``Hud.annotate(image, info)`` writes, top-left: rolling end-to-end FPS, capture->display latency and dropped
frames; forward ms, saliency ms and the saliency overhead as % of the forward; the method and its cost class
(``rtsal.methods.METHODS[name].cost``); and in red "cannot keep up: dropping frames" while frames are being
dropped. The hotkey help (``h``) is drawn top-right.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from rtsal.render.hotkeys import HELP_LINES

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
RED = (255, 70, 60)  # RGB
YELLOW = (255, 220, 0)


@dataclass(frozen=True)
class HudInfo:
    """The numbers the HUD shows (milliseconds; None where unknown)."""

    fps: float
    latency_ms: float | None
    forward_ms: float | None
    saliency_ms: float | None
    dropped: int
    method: str
    cost: str
    behind: bool = False  # frames were dropped recently
    paused: bool = False
    pinned: str | None = None  # the class label the CAM is pinned to, None when following top-1
    engine: str | None = None  # the backend that drew the frame: eager, compiled, openvino, ...
    plain_ms: float | None = None  # the same backend's plain forward pass (measured when it was built)

    @property
    def overhead_pct(self) -> float | None:
        """Saliency time as a percentage of the forward pass."""
        if self.forward_ms is None or self.saliency_ms is None or self.forward_ms <= 0:
            return None
        return 100.0 * self.saliency_ms / self.forward_ms

    def lines(self) -> list[str]:
        lat = "-" if self.latency_ms is None else f"{self.latency_ms:.0f} ms"
        fwd = "-" if self.forward_ms is None else f"{self.forward_ms:.1f} ms"
        sal = "-" if self.saliency_ms is None else f"{self.saliency_ms:.1f} ms"
        pct = "" if self.overhead_pct is None else f" (+{self.overhead_pct:.1f}%)"
        third = f"{self.method} [{self.cost}]"
        if self.engine:
            third += f"  {self.engine.replace('eager (compiling)', 'eager, compiling...')}"
        if self.pinned:
            third += f"  class: {self.pinned}"
        if self.paused:
            third += "  PAUSED"
        # the compiled engine runs the forward pass and the per-scale maps as one graph: its time is not a
        # plain forward pass, and the rest of the maps (resampling, fusion) come after it
        if self.engine and not self.engine.startswith("eager"):
            vs = ""
            if self.plain_ms and self.forward_ms is not None:  # the maps' cost on this very runtime
                vs = f" (+{100.0 * (self.forward_ms + (self.saliency_ms or 0)) / self.plain_ms - 100:.0f}%" \
                     f" vs plain {self.plain_ms:.1f})"
            times = f"forward+maps {fwd}  after {sal}{vs}"
        else:
            times = f"forward {fwd}  saliency {sal}{pct}"
        return [f"{self.fps:5.1f} fps  latency {lat}  dropped {self.dropped}", times, third]


class DropWatch:
    """Says whether the dropped-frame count grew within the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._seen: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def update(self, dropped: int, now: float | None = None) -> bool:
        now = time.perf_counter() if now is None else now
        with self._lock:
            self._seen.append((now, dropped))
            while len(self._seen) > 1 and now - self._seen[0][0] > self.window_s:
                self._seen.popleft()
            return dropped > self._seen[0][1]


_DARKEN = (np.arange(256, dtype=np.uint16) * 2 // 5).astype(np.uint8)  # x -> 40% of x, as uint8


def _text_box(image: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]], scale: float,
              right: bool = False) -> None:
    """Lines of text on a translucent dark box in a top corner, in place."""
    if not lines:
        return
    thickness = 1 if scale < 0.7 else 2
    sizes = [cv2.getTextSize(text, FONT, scale, thickness) for text, _ in lines]
    line_h = max(h + b for (_, h), b in sizes) + 4
    box_w = max(w for (w, _), _ in sizes) + 10
    box_h = line_h * len(lines) + 6
    H, W = image.shape[:2]
    box_w, box_h = min(box_w, W), min(box_h, H)
    x0 = W - box_w if right else 0
    region = image[0:box_h, x0 : x0 + box_w]
    region[:] = cv2.LUT(region, _DARKEN)  # darken to 40% (a table: no 16-bit copy of the box)
    for k, ((text, color), ((_, h), _)) in enumerate(zip(lines, sizes, strict=True)):
        y = 3 + k * line_h + h + 2
        cv2.putText(image, text, (x0 + 5, y), FONT, scale, color, thickness, cv2.LINE_AA)


@dataclass
class Hud:
    """Draws :class:`HudInfo` (and the hotkey help when ``help`` is set) on a copy of an RGB frame."""

    scale: float | None = None  # text scale; default from the frame width

    def annotate(self, image: np.ndarray, info: HudInfo, help: bool = False) -> np.ndarray:
        out = np.ascontiguousarray(image).copy()
        scale = self.scale if self.scale is not None else max(0.35, min(0.7, out.shape[1] / 1100))
        lines = [(text, WHITE) for text in info.lines()]
        if info.behind:
            lines.append(("cannot keep up: dropping frames", RED))
        _text_box(out, lines, scale)
        if help:
            _text_box(out, [("keys", YELLOW)] + [(t, WHITE) for t in HELP_LINES], scale, right=True)
        return out
