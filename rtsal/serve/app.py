"""The web application: the page, its assets, ``/api/stats``, ``/api/info``, ``/api/explain`` (uploads) and
the ``/ws`` WebSocket, behind one guard (Starlette, served by uvicorn).

The guard runs before any route: the ``Host`` header must name this server (a DNS-rebinding page cannot
reach it), the token must be on the request (query ``token=`` or header ``X-Rtsal-Token``; compared in
constant time) and a WebSocket's ``Origin``, when the client sends one (browsers always do), must be the
page's own origin. Anything else gets 403 before a route sees it. Every response forbids sniffing,
framing and referrers (the token is in the page's address).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from rtsal.serve.engine import ServeEngine, TooManyClients
from rtsal.serve.protocol import (
    TOO_BIG,
    TRY_LATER,
    BadMessage,
    ClientSettings,
    Limits,
    check_side,
    image_size,
    parse_frame,
    parse_settings,
    sniff_upload,
)
from rtsal.serve.uploads import explain_upload

__all__ = ["AppConfig", "build_app"]

ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD = frozenset({"0.0.0.0", "::", ""})
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


@dataclass(frozen=True)
class AppConfig:
    """What the app needs besides the engine."""

    token: str
    host: str = "127.0.0.1"  # the address bound: names other than loopback ones are allowed in Host
    limits: Limits = Limits()
    defaults: ClientSettings = ClientSettings()
    methods: tuple[str, ...] = ()
    views: tuple[str, ...] = ()
    cmaps: tuple[str, ...] = ()
    inflight: int = 2  # frames a page may have in flight: one per inference stream, at least 2 (measured:
    # one more adds a frame that waits a whole inference in the inbox, latency 270 -> 140 ms without it)
    model: str = ""


def _host_name(host_header: str) -> str:
    """``example:8000`` -> ``example``, ``[::1]:8000`` -> ``::1``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: Host, token and (WebSocket) Origin, checked before any route."""

    def __init__(self, app: ASGIApp, config: AppConfig) -> None:
        self.app = app
        self.token = config.token.encode()
        self.any_host = config.host in WILDCARD
        self.hosts = LOOPBACK | {_host_name(config.host).lower()}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        reason = self.refuse(scope, headers)
        if reason is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason})  # 403 to the handshake
        else:
            await PlainTextResponse(f"forbidden: {reason}\n", status_code=403, headers=HEADERS)(
                scope, receive, send)

    def refuse(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """Why the request is refused, or None."""
        host = headers.get("host", "")
        if not host or not (self.any_host or _host_name(host).lower() in self.hosts):
            return "unknown host"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = (query.get("token") or [headers.get("x-rtsal-token", "")])[0]
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token):
            return "a valid token is needed (open the address rtsal serve printed)"
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}" and (
            scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD")
        ):
            return "cross-origin request"
        return None


def _asset(name: str) -> bytes:
    return (resources.files("rtsal.serve") / "static" / name).read_bytes()


def build_app(engine: ServeEngine, config: AppConfig, workdir: Path) -> Starlette:
    """The application over a running ``engine``; uploads go to ``workdir`` (private, the caller owns it)."""
    page = _asset("index.html").decode()
    upload_lock = asyncio.Lock()

    async def index(request: Request) -> Response:
        html = page.replace("{{TOKEN}}", config.token).replace("{{MODEL}}", config.model)
        return Response(html, media_type="text/html; charset=utf-8", headers=HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("not found\n", status_code=404, headers=HEADERS)
        return Response(_asset(name), media_type=ASSETS[name], headers=HEADERS)

    async def stats(request: Request) -> Response:
        return JSONResponse(engine.stats(), headers=HEADERS)

    def info() -> dict[str, Any]:
        return {"methods": list(config.methods), "views": list(config.views), "cmaps": list(config.cmaps),
                "defaults": asdict(config.defaults), "limits": asdict(config.limits),
                "inflight": config.inflight, "model": config.model}

    async def api_info(request: Request) -> Response:
        return JSONResponse(info(), headers=HEADERS)

    async def explain(request: Request) -> Response:
        limits = config.limits
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return PlainTextResponse("a Content-Length is needed\n", status_code=411, headers=HEADERS)
        if int(length) > limits.upload_bytes:
            return PlainTextResponse(f"uploads are limited to {limits.upload_bytes} bytes\n", status_code=413,
                                     headers=HEADERS)
        try:
            settings = parse_settings(request.query_params.get("settings", '{"type": "settings"}'),
                                      config.defaults, config.methods, config.views, config.cmaps)
        except BadMessage as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400, headers=HEADERS)
        if upload_lock.locked():
            return PlainTextResponse("another upload is being explained; try again when it is done\n",
                                     status_code=429, headers=HEADERS)
        async with upload_lock:
            folder = Path(tempfile.mkdtemp(prefix="upload-", dir=workdir))
            try:
                return await _receive_and_explain(request, folder, settings, limits)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    async def _receive_and_explain(request: Request, folder: Path, settings: ClientSettings,
                                   limits: Limits) -> Response:
        path = folder / "upload"
        size = 0
        with open(path, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.upload_bytes:
                    return PlainTextResponse(f"uploads are limited to {limits.upload_bytes} bytes\n",
                                             status_code=413, headers=HEADERS)
                f.write(chunk)
        try:
            with open(path, "rb") as f:
                kind = sniff_upload(f.read(1 << 16), request.headers.get("content-type", ""))
            if kind in ("jpeg", "png"):
                with open(path, "rb") as f:
                    check_side(image_size(f.read(1 << 16))[1], limits.upload_side, limits.min_side)
            result = await run_in_threadpool(explain_upload, path, kind, engine.explainer, settings, limits,
                                             folder)
        except BadMessage as exc:
            status = 413 if exc.code == TOO_BIG else 415
            return PlainTextResponse(f"{exc}\n", status_code=status, headers=HEADERS)
        top = json.dumps(result.top, ensure_ascii=True)
        return Response(result.data, media_type=result.media_type, headers={
            **HEADERS, "X-Rtsal-Top": top, "X-Rtsal-Frames": str(result.frames),
            "X-Rtsal-Extension": result.extension, "X-Rtsal-Seconds": f"{result.seconds:.2f}"})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        loop = asyncio.get_running_loop()
        outbox = _Outbox()

        def deliver(message: bytes) -> None:  # the render thread's way into this event loop
            try:
                loop.call_soon_threadsafe(outbox.put, message)
            except RuntimeError:  # the loop has closed: the server is stopping
                pass

        try:
            client = engine.source.add(deliver, config.defaults)
        except TooManyClients as exc:
            await websocket.send_text(json.dumps({"type": "error", "message": str(exc)}))
            await websocket.close(TRY_LATER, reason="too many clients")
            return
        sender = asyncio.create_task(_send_results(websocket, outbox))
        try:
            await websocket.send_text(json.dumps({"type": "hello", **info()}))
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    fid, jpeg = parse_frame(msg["bytes"], config.limits)
                    engine.source.put(client, fid, jpeg)
                elif msg.get("text") is not None:
                    text = msg["text"]
                    if len(text.encode()) > config.limits.text_bytes:
                        raise BadMessage(f"text message over {config.limits.text_bytes} bytes", TOO_BIG)
                    client.settings = parse_settings(text, client.settings, config.methods, config.views,
                                                     config.cmaps)
        except BadMessage as exc:
            try:
                await websocket.send_text(json.dumps({"type": "error", "message": str(exc)}))
                await websocket.close(exc.code, reason=str(exc)[:120])
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the page went away
        finally:
            engine.source.remove(client)
            sender.cancel()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", asset),
            Route("/api/stats", stats),
            Route("/api/info", api_info),
            Route("/api/explain", explain, methods=["POST"]),
            WebSocketRoute("/ws", ws),
        ],
    )


def guarded(app: ASGIApp, config: AppConfig) -> Guard:
    """``app`` behind the :class:`Guard`."""
    return Guard(app, config)


class _Outbox:
    """Results waiting for one page: only the newest is kept (a slow page skips results, never lags)."""

    def __init__(self) -> None:
        self.item: bytes | None = None
        self.ready = asyncio.Event()
        self.skipped = 0

    def put(self, item: bytes) -> None:
        if self.item is not None:
            self.skipped += 1
        self.item = item
        self.ready.set()

    async def get(self) -> bytes:
        await self.ready.wait()
        self.ready.clear()
        item, self.item = self.item, None
        return item or b""


async def _send_results(websocket: WebSocket, outbox: _Outbox) -> None:
    try:
        while True:
            await websocket.send_bytes(await outbox.get())
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the page went away; the receive loop ends too
