"""The render stage: a frame and its result -> the picture. The one render recipe of rtsal:
select the frame's image of the batch -> the drawn maps to the host -> smooth (at model resolution) ->
view (overlay, LOVI, layers, side by side, map; each resizes the small map to the frame in uint8 as it
colours it) -> top-k labels.

numpy and OpenCV only after the host copy: torch calls here would start a second pool of intra-op threads
competing with the model's for the same cores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtsal.names import VIEW_FIELDS
from rtsal.render.frames import select, to_host
from rtsal.render.smooth import MapSmoother
from rtsal.render.views import draw_topk, make_view
from rtsal.telemetry import CpuStages

if TYPE_CHECKING:
    import numpy as np

    from rtsal.frame.infer import FrameResult
    from rtsal.types import SaliencyResult

__all__ = ["FrameRenderer"]


class FrameRenderer:
    """Draws results over frames: ``renderer(image, frame_result) -> RGB uint8 picture``.

    Args:
        view: what to draw (see :mod:`rtsal.names`); change it, ``cmap`` and ``alpha`` with :meth:`set_style`.
        cmap: the colour map of the drawn map.
        alpha: the map's opacity over the frame.
        smooth: weight of the previous frames in an exponential moving average of the maps (0: off).
        labels: how many top classes to write in the corner (0: none).
        label_scale: text scale; default from the frame's width.
        cpu: where to add each sub-stage's CPU time per frame ("maps to host" with the smoothing, "view" =
            resize to the frame, colour map and blend, "labels"); default: a new
            :class:`~rtsal.telemetry.CpuStages` (``self.cpu``).
    """

    def __init__(
        self,
        view: str = "overlay",
        cmap: str = "jet",
        alpha: float = 0.5,
        *,
        smooth: float = 0.0,
        labels: int = 3,
        label_scale: float | None = None,
        cpu: CpuStages | None = None,
    ) -> None:
        self.cpu = cpu if cpu is not None else CpuStages()
        self.smoother = MapSmoother(smooth)
        self.labels = labels
        self.label_scale = label_scale
        self._style: tuple[str, str, float] | None = None
        self._view: Any = None
        self.set_style(view, cmap, alpha)
        self.last: SaliencyResult | None = None  # the last frame's one-image result, maps at model size

    def set_style(self, view: str | None = None, cmap: str | None = None, alpha: float | None = None) -> None:
        """Switch view, colour map or opacity for the next frames (hotkeys v, c, +/-)."""
        old = self._style or ("overlay", "jet", 0.5)
        style = (view or old[0], cmap or old[1], old[2] if alpha is None else float(alpha))
        if style != self._style:
            self._view = make_view(*style)
            if self._style is not None and style[0] != self._style[0]:
                self.smoother.reset()
            self._style = style

    @property
    def fields(self) -> tuple[str, ...]:
        """The result maps the current view draws."""
        return VIEW_FIELDS[self._style[0]] if self._style else ("saliency",)

    def reset(self) -> None:
        """Forget the smoothing state (a new method or scene)."""
        self.smoother.reset()

    def maps(self, fr: FrameResult) -> SaliencyResult:
        """The frame's one-image result with the drawn maps on the host and smoothed, at model resolution
        (the view resizes them to the frame: a small float map is cheaper to smooth than a frame-sized
        one)."""
        fields = self.fields
        with self.cpu.measure("maps to host"):
            return self.smoother(to_host(select(fr.result, fr.i), fields), fields)

    def __call__(self, image: np.ndarray, fr: FrameResult) -> np.ndarray:
        """RGB uint8 (H, W, 3) and its result -> the picture (a new array; ``image`` is not changed)."""
        one = self.maps(fr)
        with self.cpu.measure("view"):
            out = self._view.annotate(image, one, 0)
        if self.labels:  # label size from the frame's width, also on the wider side-by-side and grid views
            with self.cpu.measure("labels"):
                scale = self.label_scale or max(0.4, min(1.0, image.shape[1] / 900))
                draw_topk(out, one, 0, k=self.labels, scale=scale)
        self.last = one
        return out
