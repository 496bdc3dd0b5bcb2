"""The infer stage for clip models: a sliding window over the frames (files) or a ring buffer (live).

A clip model explains ``clip_len`` frames at once and gives a map per time step. The pipeline hands the
infer stage its frames in order, ``stride`` at a time for a file (``batch=stride``; one at a time live).
:class:`ClipFrameExplainer` keeps the last ``clip_len`` frames it was given, explains that window each
time, and gives every new frame the map of its own time step in the window, the window's classes and the
window's first and last frame index. Nothing is dropped or reordered: one result per frame, in order.

Overlapping windows (``stride < clip_len``) are not averaged: a frame takes its map from the window that
ends with its group of ``stride`` frames, the first window that contains it; later windows use it only as
context for newer frames. The map of a frame therefore depends only on it and the frames before it
(causal), the same rule as live, where every window ends with the newest frame. Until ``clip_len`` frames
have been seen, the window is filled by repeating its first frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rtsal.errors import UsageError
from rtsal.frame.infer import FrameExplainer, FrameResult

if TYPE_CHECKING:
    import numpy as np

    from rtsal.frame.infer import Runner
    from rtsal.types import Frame

__all__ = ["ClipFrameExplainer", "frame_explainer"]


class ClipFrameExplainer(FrameExplainer):
    """A :class:`FrameExplainer` for clip models: every call explains the window of the last ``clip_len``
    frames and returns one :class:`FrameResult` per new frame (maps of its time step, model resolution).

    ``stride`` is how many frames a file run hands over at a time (the pipeline's ``batch``).
    """

    def __init__(
        self,
        runner: Runner,
        method: str,
        *,
        clip_len: int,
        stride: int,
        target: int | None = None,
        layer: str | None = None,
        cskip: int = 16,
        min_frames: int = 1,
    ) -> None:
        if not 1 <= stride <= clip_len:
            raise UsageError(f"--clip-stride must be within 1..--clip-len ({clip_len}), got {stride}")
        super().__init__(runner, method, target=target, layer=layer, cskip=cskip)
        self.clip_len = clip_len
        self.stride = stride
        self.min_frames = min_frames  # the shortest clip the model takes (a shorter video is refused)
        self._ring: deque[tuple[int, np.ndarray]] = deque(maxlen=clip_len)
        self.windows = 0  # windows explained so far

    def window(self) -> tuple[np.ndarray, tuple[int, int]]:
        """The clip to explain: the ring's frames, front-padded with its first frame to ``clip_len`` ->
        (uint8 (clip_len, H, W, 3), (first index, last index))."""
        import numpy as np

        frames = [im for _, im in self._ring]
        pad = [frames[0]] * (self.clip_len - len(frames))
        return np.stack(pad + frames), (self._ring[0][0], self._ring[-1][0])

    def __call__(self, frames: Sequence[Frame]) -> list[FrameResult]:
        from rtsal.engine.clips import frame_result

        if len(frames) > self.clip_len:
            raise ValueError(f"{len(frames)} frames at once for a {self.clip_len}-frame window")
        for f in frames:
            if self._ring and self._ring[-1][1].shape != f.image.shape:  # a new frame size: a new scene
                self._ring.clear()
            self._ring.append((f.index, f.image))
        method = self.method
        clip, span = self.window()
        result = self.explain(clip)  # maps (1, clip_len, h, w) at model resolution
        self.windows += 1
        n = len(frames)
        per_frame = {k: v / n for k, v in result.timings.items()}
        first = self.clip_len - n
        return [
            FrameResult(frame_result(result, first + i), 0, per_frame, n, method, window=span)
            for i in range(n)
        ]


def frame_explainer(
    runner: Any,
    method: str,
    *,
    clip_len: int | None = None,
    clip_stride: int | None = None,
    target: int | None = None,
    layer: str | None = None,
    cskip: int = 16,
) -> FrameExplainer:
    """The infer stage for ``runner``'s model: a :class:`ClipFrameExplainer` for a clip model (``clip_len``
    default the model's, ``clip_stride`` default ``clip_len``: windows side by side), else a
    :class:`FrameExplainer`. Clip options for an image model are a usage error. Closes ``runner`` if it
    raises."""
    try:
        explainer = getattr(runner, "explainer", runner)
        kind = getattr(explainer, "kind", "image")
        if kind != "clip":
            if clip_len is not None or clip_stride is not None:
                raise UsageError(
                    f"--clip-len/--clip-stride need a clip model (e.g. r3d_18); {explainer.name} takes "
                    "images"
                )
            return FrameExplainer(runner, method, target=target, layer=layer, cskip=cskip)
        n = clip_len if clip_len is not None else explainer.clip_len or 16
        if n < explainer.min_frames:
            raise UsageError(
                f"--clip-len {n} is shorter than {explainer.name}'s minimum, {explainer.min_frames} frames"
            )
        return ClipFrameExplainer(runner, method, clip_len=n, stride=clip_stride or n, target=target,
                                  layer=layer, cskip=cskip, min_frames=explainer.min_frames)
    except BaseException:
        runner.close()
        raise
