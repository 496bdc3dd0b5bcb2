"""An uploaded image or short video -> its explanation as a file (PNG or MP4), with the same frame layer.

Runs on a worker thread of the server: the uploaded file and the result live in a private folder that the
caller deletes. The picture is drawn as the live view draws it (the page's view, colour map, opacity and
method); a video goes through :class:`~rtsal.frame.video_job.VideoJob`, every frame and the audio kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.serve.engine import top_classes
from rtsal.serve.protocol import BadMessage, ClientSettings, Limits, check_side

if TYPE_CHECKING:
    from rtsal.frame.infer import FrameExplainer, FrameResult
    from rtsal.types import Frame

__all__ = ["Explained", "explain_upload"]

IMAGE_KINDS = ("jpeg", "png")


@dataclass(frozen=True)
class Explained:
    """The result file: its bytes, media type, file extension and the top-5 classes (of the first frame)."""

    data: bytes
    media_type: str
    extension: str
    top: list[tuple[str, float]]
    frames: int
    seconds: float


class _WithMethod:
    """The explainer with the upload's own method, as the video job calls it (the live pages keep theirs)."""

    def __init__(self, explainer: FrameExplainer, method: str) -> None:
        self.explainer = explainer
        self.method = method
        self.sequential = explainer.sequential
        self.first: FrameResult | None = None

    @property
    def class_names(self) -> Any:
        return self.explainer.class_names

    def reset(self) -> None:
        self.explainer.reset()

    def __call__(self, frames: list[Frame]) -> list[FrameResult]:
        out = self.explainer(frames, method=self.method)
        if self.first is None and out:
            self.first = out[0]
        return out


def explain_upload(
    path: Path, kind: str, explainer: FrameExplainer, settings: ClientSettings, limits: Limits, workdir: Path
) -> Explained:
    """Explain the uploaded file at ``path`` (``kind`` from :func:`rtsal.serve.protocol.sniff_upload`);
    the result is written into ``workdir`` and read back. :class:`BadMessage` for a file that is not what
    it claims or is over the limits."""
    t0 = time.perf_counter()
    if kind in IMAGE_KINDS:
        return _image(path, explainer, settings, t0)
    return _video(path, explainer, settings, limits, workdir, t0)


def _image(path: Path, explainer: FrameExplainer, settings: ClientSettings, t0: float) -> Explained:
    import cv2
    import numpy as np

    from rtsal.frame.render import FrameRenderer
    from rtsal.types import Frame

    bgr = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadMessage("the image cannot be decoded")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    frame = Frame(index=0, pts=None, t_capture=time.perf_counter(), image=rgb)
    fr = explainer([frame], method=settings.method)[0]
    picture = FrameRenderer(settings.view, settings.cmap, settings.alpha)(rgb, fr)
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return Explained(png.tobytes(), "image/png", "png", top_classes(fr), 1, time.perf_counter() - t0)


def _video(
    path: Path, explainer: FrameExplainer, settings: ClientSettings, limits: Limits, workdir: Path, t0: float
) -> Explained:
    from rtsal.errors import VideoIOError
    from rtsal.frame.video_job import VideoJob, VideoSettings
    from rtsal.io.video import VideoReader

    try:
        with VideoReader(path) as reader:
            info = reader.info
    except VideoIOError as exc:
        raise BadMessage(f"the video cannot be read: {exc}") from None
    check_side((info.width, info.height), limits.upload_side, limits.min_side)
    if info.duration is None or info.duration > limits.video_seconds:
        raise BadMessage(f"videos up to {limits.video_seconds:g} s are explained here (use `rtsal video` for "
                         "longer ones)")
    out = workdir / "explained.mp4"
    drawn = VideoSettings(view=settings.view, cmap=settings.cmap, alpha=settings.alpha,
                          smooth=settings.smooth, progress=False)
    runner = _WithMethod(explainer, settings.method)
    with VideoJob(path, out, drawn) as job:
        summary = job.run(runner)  # type: ignore[arg-type]  (the explainer with this upload's method)
    data = out.read_bytes()
    out.unlink()
    return Explained(data, "video/mp4", "mp4", top_classes(runner.first), summary.frames,
                     time.perf_counter() - t0)
