"""The server's engine: the frame layer on the live pipeline, fed by browser pages instead of a camera.

Each connected page is a :class:`Client` with a one-frame inbox: a frame that arrives before the last one
was taken replaces it (counted as dropped), so no frame ever queues behind the engine. The pipeline's
capture stage takes the pages' newest frames in turn (:class:`ClientFrames`: decode the JPEG, nothing
more), its infer streams explain them with each page's method
(:class:`~rtsal.frame.infer.FrameExplainer`), and its render stage draws them with each page's own
:class:`~rtsal.frame.render.FrameRenderer` and hands the JPEG to the page's outbox, which also keeps only
the newest result. The pipeline runs live, as ``rtsal webcam`` does: a latest-frame slot between capture
and infer, an older result never drawn after a newer one.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtsal.frame.render import FrameRenderer
from rtsal.pipeline import PipelineMonitor, run_pipeline
from rtsal.serve.protocol import ClientSettings, pack_result
from rtsal.telemetry import FpsMeter, StageTimer, rss_mb
from rtsal.types import Frame

if TYPE_CHECKING:
    from rtsal.frame.infer import FrameExplainer, FrameResult

__all__ = ["Client", "ClientFrames", "ServeEngine", "TooManyClients", "top_classes"]

JPEG_QUALITY = 85
TOPK = 5


class TooManyClients(RuntimeError):
    """Every client place is taken."""


@dataclass(frozen=True)
class _Origin:
    """Where a frame in the pipeline came from (``Frame.extra``)."""

    client: Client
    fid: int
    settings: ClientSettings


class Client:
    """One page: its settings, its one-frame inbox and where its results go.

    ``deliver(bytes)`` is called from the render thread with each result message; the server makes it
    thread-safe (it hands the message to the event loop).
    """

    def __init__(self, cid: int, deliver: Callable[[bytes], None], settings: ClientSettings) -> None:
        self.cid = cid
        self.deliver = deliver
        self.settings = settings  # replaced whole by the server thread, read by the pipeline's threads
        self.closed = False
        self.received = 0
        self.dropped = 0
        self.answered = 0
        self._pending: tuple[int, bytes, float] | None = None
        self.renderer: FrameRenderer | None = None  # render thread only
        self._drawn_with: ClientSettings | None = None

    def renderer_for(self, settings: ClientSettings) -> FrameRenderer:
        """The page's renderer in ``settings``' style (a new one when the smoothing weight changes; smoothing
        restarts when the method or view changes)."""
        old = self._drawn_with
        if self.renderer is None or old is None or old.smooth != settings.smooth:
            self.renderer = FrameRenderer(settings.view, settings.cmap, settings.alpha,
                                          smooth=settings.smooth, labels=0)
        else:
            self.renderer.set_style(settings.view, settings.cmap, settings.alpha)
            if old.method != settings.method:
                self.renderer.reset()
        self._drawn_with = settings
        return self.renderer


class ClientFrames:
    """The pipeline's source: the newest frame of each page, pages taken in turn, decoded to RGB.

    Iterating blocks until a page has a frame, ``stop`` is set (the iteration ends) or :meth:`close`.
    """

    live = True

    def __init__(self, stop: threading.Event, max_clients: int) -> None:
        self.stop = stop
        self.max_clients = max_clients
        self._cond = threading.Condition()
        self._clients: list[Client] = []
        self._ids = itertools.count(1)
        self._turn = 0
        self._closed = False
        self.undecodable = 0

    # -- the server's side ---------------------------------------------------------------------------------
    def add(self, deliver: Callable[[bytes], None], settings: ClientSettings) -> Client:
        with self._cond:
            if len(self._clients) >= self.max_clients:
                raise TooManyClients(f"{self.max_clients} client(s) connected already")
            client = Client(next(self._ids), deliver, settings)
            self._clients.append(client)
            return client

    def remove(self, client: Client) -> None:
        with self._cond:
            client.closed = True
            client._pending = None
            if client in self._clients:
                self._clients.remove(client)

    def put(self, client: Client, fid: int, jpeg: bytes) -> None:
        """A page's new frame (replaces one not yet taken)."""
        with self._cond:
            if client.closed:
                return
            client.received += 1
            if client._pending is not None:
                client.dropped += 1
            client._pending = (fid, jpeg, time.perf_counter())
            self._cond.notify()

    @property
    def clients(self) -> int:
        with self._cond:
            return len(self._clients)

    # -- the capture thread's side -------------------------------------------------------------------------
    def _take(self) -> tuple[Client, int, bytes, float] | None:
        with self._cond:
            while not (self.stop.is_set() or self._closed):
                ready = [c for c in self._clients if c._pending is not None]
                if ready:
                    self._turn += 1
                    client = ready[self._turn % len(ready)]
                    fid, jpeg, t = client._pending  # type: ignore[misc]
                    client._pending = None
                    return client, fid, jpeg, t
                self._cond.wait(0.1)
            return None

    def __iter__(self) -> Iterator[Frame]:
        import cv2
        import numpy as np

        index = 0
        while True:
            taken = self._take()
            if taken is None:
                return
            client, fid, jpeg, t_received = taken
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:  # the header was sound but the data is not: skip it, the page goes on
                self.undecodable += 1
                continue
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield Frame(index=index, pts=None, t_capture=t_received, image=rgb,
                        extra=_Origin(client, fid, client.settings))
            index += 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ServeEngine:
    """Runs the live pipeline for the pages on a thread of its own: :meth:`start`, :meth:`close`.

    ``explainer`` is owned (closed by :meth:`close`). ``on_error(exc)`` is called from the engine thread if
    the pipeline fails (the server then stops and the command reports it).
    """

    def __init__(
        self,
        explainer: FrameExplainer,
        *,
        streams: int = 1,
        max_clients: int = 4,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.explainer = explainer
        self.streams = 1 if explainer.sequential else streams
        self.stop = threading.Event()
        self.source = ClientFrames(self.stop, max_clients)
        self.monitor = PipelineMonitor()
        self.on_error = on_error
        self.error: BaseException | None = None
        self.frames = 0  # frames explained and sent to pages since the start
        self.fps = FpsMeter()
        self.forward = StageTimer("forward", window=60)
        self.saliency = StageTimer("saliency", window=60)
        self.latency = StageTimer("server latency", window=240)  # frame received -> result handed over
        self.engine_name: str | None = None
        self.t_start = time.perf_counter()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifetime --------------------------------------------------------------------------------------------
    def start(self) -> ServeEngine:
        self._thread = threading.Thread(target=self._run, name="rtsal-serve-engine", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            run_pipeline(self.source, self._infer, self._render, live=True, stop=self.stop,
                         monitor=self.monitor, streams=self.streams)
        except BaseException as exc:  # noqa: BLE001 - reported to the server, which stops
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)

    def close(self) -> None:
        """Stop the pipeline, join it, close the explainer."""
        self.stop.set()
        self.source.close()
        try:
            if self._thread is not None:
                self._thread.join(timeout=30)
        finally:
            self.explainer.close()

    def __enter__(self) -> ServeEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline's stages -------------------------------------------------------------------------------
    def _infer(self, frames: list[Frame]) -> list[FrameResult]:
        origin: _Origin = frames[0].extra
        return self.explainer(frames, method=origin.settings.method)

    def _render(self, frame: Frame, fr: FrameResult) -> bool:
        import cv2

        origin: _Origin = frame.extra
        client = origin.client
        if client.closed:
            return True
        renderer = client.renderer_for(origin.settings)
        picture = renderer(frame.image, fr)
        with self.monitor.cpu.measure("encode"):
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        self._count(fr)
        client.answered += 1
        client.deliver(pack_result(origin.fid, self._header(fr, origin.settings), jpeg.tobytes()))
        self.latency.add((time.perf_counter() - frame.t_capture) * 1e3)
        return True

    def _count(self, fr: FrameResult) -> None:
        with self._lock:
            self.frames += 1
            self.fps.tick()
            for timer, name in ((self.forward, "forward"), (self.saliency, "saliency")):
                if name in fr.timings:
                    timer.add(fr.timings[name])
            self.engine_name = fr.result.engine

    def _header(self, fr: FrameResult, settings: ClientSettings) -> dict[str, Any]:
        return {"top": top_classes(fr), "method": fr.method, "view": settings.view, **self.figures()}

    # -- figures -------------------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The engine's figures now: what the page's HUD and ``GET /api/stats`` show."""
        with self._lock:
            fwd = self.forward.median() if self.forward.count else None
            sal = self.saliency.median() if self.saliency.count else None
            lat = self.latency.median() if self.latency.count else None
            return {
                "frames": self.frames,
                "fps": round(self.fps.fps(), 2),
                "forward_ms": None if fwd is None else round(fwd, 2),
                "saliency_ms": None if sal is None else round(sal, 2),
                "saliency_overhead_pct": None if not fwd or sal is None else round(100.0 * sal / fwd, 1),
                "server_latency_ms": None if lat is None else round(lat, 1),
                "engine": self.engine_name,
            }

    def stats(self) -> dict[str, Any]:
        """``GET /api/stats``: :meth:`figures` plus the pipeline's counters, clients and memory."""
        counts = self.monitor.snapshot()
        return {
            **self.figures(),
            "clients": self.source.clients,
            "captured": counts["captured"],
            "dropped": counts["dropped"],
            "undecodable": self.source.undecodable,
            "streams": self.streams,
            "uptime_s": round(time.perf_counter() - self.t_start, 1),
            "rss_mb": round(rss_mb(), 1),
            "threads": _torch_threads(),
        }


def top_classes(fr: FrameResult | None, k: int = TOPK) -> list[tuple[str, float]]:
    """The frame's top-``k`` classes as (name, probability) pairs; [] for None."""
    if fr is None:
        return []
    top = fr.result.topk
    k = min(k, top.indices.shape[1])
    probs = top.probs[fr.i, :k].tolist()
    return [(str(name), round(float(p), 4)) for name, p in zip(top.labels[fr.i][:k], probs, strict=True)]


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
