"""Views: small annotators that draw one image's explanation over (or beside) the RGB frame.

Each view has its configuration in ``__init__`` and one ``annotate(image, result, i) -> image`` taking and
returning RGB uint8 (H, W, 3); ``i`` picks the image of the batch in ``result``. The result's maps may have
any size (the engine's model resolution, as the render stage hands them over): each view resizes what it
draws to the frame or tile, in uint8 where it can (:func:`rtsal.render.colormap.colorize`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from rtsal.render.colormap import colorize, fit, to_numpy_map
from rtsal.types import SaliencyResult

FONT = cv2.FONT_HERSHEY_SIMPLEX


def blend(image: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * color`` in uint8."""
    return cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0)


@functools.lru_cache(maxsize=512)
def label_patch(text: str, scale: float) -> np.ndarray:
    """White text on a black box, drawn once per (text, scale) and cached: labels repeat from frame to frame,
    and anti-aliased text is the dearest thing drawn per frame. Read-only RGB uint8 (h, w, 3)."""
    thickness = 1 if scale < 0.8 else 2
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    patch = np.zeros((th + base + 7, tw + 7, 3), np.uint8)
    cv2.putText(patch, text, (3, th + 3), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    patch.flags.writeable = False
    return patch


def put_label(image: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5) -> None:
    """White text on a dark box, in place; ``org`` is the top-left corner (clipped to the image)."""
    patch = label_patch(text, float(scale))
    x, y = org
    h, w = image.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + patch.shape[1]), min(h, y + patch.shape[0])
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def draw_topk(
    image: np.ndarray, result: SaliencyResult, i: int = 0, k: int = 3, scale: float | None = None
) -> None:
    """Write the top-k classes with their probabilities in the bottom-left corner, in place."""
    h = image.shape[0]
    scale = scale if scale is not None else max(0.4, min(1.0, image.shape[1] / 900))
    line = int(28 * scale / 0.5 * 0.75)
    labels = result.topk.labels[i][:k]
    probs = result.topk.probs[i][:k].tolist()
    for j, (name, p) in enumerate(zip(labels, probs, strict=False)):
        y = h - (len(labels) - j) * line - 6
        put_label(image, f"{j + 1}. {name} {p:.0%}", (6, y), scale)


@dataclass
class OverlayView:
    """The method's map through a colour map, blended over the frame."""

    cmap: str = "jet"
    alpha: float = 0.5

    def annotate(self, image: np.ndarray, result: SaliencyResult, i: int = 0) -> np.ndarray:
        return blend(image, colorize(result.saliency[i], self.cmap, image.shape[:2]), self.alpha)


@dataclass
class MapView:
    """The method's map alone, through a colour map."""

    cmap: str = "jet"
    alpha: float = 0.5

    def annotate(self, image: np.ndarray, result: SaliencyResult, i: int = 0) -> np.ndarray:
        return colorize(result.saliency[i], self.cmap, image.shape[:2])


@dataclass
class LoviView:
    """LOVI colouring of the per-scale stack (violet: early layers ... yellow/red: late; white: all alike)."""

    cmap: str = "jet"
    alpha: float = 0.5

    def annotate(self, image: np.ndarray, result: SaliencyResult, i: int = 0) -> np.ndarray:
        if result.scales is None:
            return OverlayView(self.cmap, self.alpha).annotate(image, result, i)
        import torch

        from rtsal.engine.saliency.lovi import lovi

        bgr = to_numpy_map(lovi(torch.as_tensor(np.ascontiguousarray(result.scales[i]))))
        rgb = (bgr[..., ::-1] * 255.0 + 0.5).astype(np.uint8)  # at the maps' size, then resized
        return blend(image, fit(np.ascontiguousarray(rgb), image.shape[:2]), self.alpha)


@dataclass
class SideView:
    """Photo | map | overlay, side by side (3x the width)."""

    cmap: str = "jet"
    alpha: float = 0.5

    def annotate(self, image: np.ndarray, result: SaliencyResult, i: int = 0) -> np.ndarray:
        color = colorize(result.saliency[i], self.cmap, image.shape[:2])
        return np.concatenate([image, color, blend(image, color, self.alpha)], axis=1)


@dataclass
class LayersView:
    """A labelled grid over the frame: each scale's map, the combined SMOE map, the CAM, the method's map."""

    cmap: str = "jet"
    alpha: float = 0.5

    def annotate(self, image: np.ndarray, result: SaliencyResult, i: int = 0) -> np.ndarray:
        tiles: list[tuple[str, np.ndarray]] = []
        if result.scales is not None:
            for l, name in enumerate(result.layers or [f"scale {l}" for l in range(result.scales.shape[1])]):
                tiles.append((f"{l + 1}: {name}", result.scales[i, l]))
        for label, m in (("SMOE combined", result.smoe), ("CAM", result.cam)):
            if m is not None:
                tiles.append((label, m[i]))
        tiles.append((result.method, result.saliency[i]))
        h, w = image.shape[:2]
        cols = math.ceil(math.sqrt(len(tiles)))
        rows = math.ceil(len(tiles) / cols)
        tw = max(64, w // cols, min(w, 300))
        th = max(48, round(h * tw / w))
        grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
        small = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        scale = max(0.35, min(0.6, tw / 500))
        for k, (label, m) in enumerate(tiles):
            r, c = divmod(k, cols)
            tile = blend(small, colorize(m, self.cmap, (th, tw)), self.alpha)
            put_label(tile, label, (2, 2), scale)
            grid[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
        return grid


VIEW_CLASSES = {
    "overlay": OverlayView,
    "lovi": LoviView,
    "layers": LayersView,
    "side": SideView,
    "map": MapView,
}


def make_view(name: str, cmap: str = "jet", alpha: float = 0.5):
    """A view by name (see ``rtsal.names.VIEWS``)."""
    if name not in VIEW_CLASSES:
        raise ValueError(f"unknown view {name!r}: choose one of {', '.join(VIEW_CLASSES)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    return VIEW_CLASSES[name](cmap=cmap, alpha=alpha)
