"""``run_server``: the engine thread, a private folder, the app and uvicorn, torn down in that order's
reverse on every exit (a signal included: exit 130, nothing left behind)."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rtsal.errors import Interrupted, RtsalError, UsageError
from rtsal.interrupts import SIGNALS, exit_code
from rtsal.serve.protocol import ClientSettings, Limits

if TYPE_CHECKING:
    from rtsal.frame.infer import FrameExplainer

__all__ = ["ServeOptions", "page_url", "run_server"]


@dataclass(frozen=True)
class ServeOptions:
    """How ``rtsal serve`` listens and what a page starts with."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_clients: int = 4
    streams: int = 1
    limits: Limits = field(default_factory=Limits)
    defaults: ClientSettings = field(default_factory=ClientSettings)
    model: str = ""


def page_url(host: str, port: int, token: str) -> str:
    """The address to open: loopback for a wildcard bind, brackets for IPv6."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"http://{host}:{port}/?token={token}"


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise RtsalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _private_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="rtsal-serve-"))  # mode 0700
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_server(explainer: FrameExplainer, options: ServeOptions, out: TextIO | None = None) -> int:
    """Serve the page until a signal: prints the address (with its token) as the first line of ``out``.

    ``explainer`` is owned (closed on exit). Raises :class:`~rtsal.errors.Interrupted` (exit 130, or 129
    for SIGHUP) after a signal, once everything is closed and the private folder deleted.
    """
    import uvicorn

    from rtsal.names import CMAPS, VIEWS
    from rtsal.serve.app import AppConfig, build_app, guarded
    from rtsal.serve.engine import ServeEngine

    out = out or sys.stdout
    token = secrets.token_urlsafe(24)
    server_box: list[Any] = []

    def engine_failed(exc: BaseException) -> None:
        if server_box:
            server_box[0].should_exit = True

    with contextlib.ExitStack() as stack:
        engine = ServeEngine(explainer, streams=options.streams, max_clients=options.max_clients,
                             on_error=engine_failed)
        stack.callback(engine.close)  # owns the explainer from here on
        sock = _bind(options.host, options.port)
        stack.callback(sock.close)
        workdir = stack.enter_context(_private_folder())
        methods = tuple(m for m in explainer.methods)
        config = AppConfig(token=token, host=options.host, limits=options.limits, defaults=options.defaults,
                           methods=methods, views=VIEWS, cmaps=CMAPS, inflight=max(2, engine.streams),
                           model=options.model)
        app = guarded(build_app(engine, config, workdir), config)
        uconfig = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                 ws_max_size=options.limits.frame_bytes + 1024, ws_per_message_deflate=False,
                                 limit_concurrency=options.max_clients * 4 + 16,
                                 timeout_graceful_shutdown=3, lifespan="off")
        server = _server(uconfig)
        server_box.append(server)
        received = stack.enter_context(_signals(server))  # before the address is printed
        engine.start()
        port = sock.getsockname()[1]
        print(page_url(options.host, port, token), file=out, flush=True)
        if options.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"rtsal serve: listening on {options.host}:{port}, beyond this machine; anyone who can "
                  "reach it still needs the token", file=sys.stderr, flush=True)
        server.run(sockets=[sock])
        if received:
            raise Interrupted("interrupted", code=exit_code(received[0]))
        if engine.error is not None:
            raise engine.error
    return 0


def _server(config: Any) -> Any:
    """uvicorn's server, leaving the signals to :func:`_signals` (uvicorn would re-raise them after shutting
    down, killing the process by SIGTERM or SIGHUP before the clean-up)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server(config)


@contextlib.contextmanager
def _signals(server: Any) -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP stop ``server`` gracefully (a second one: at once); the list yielded
    receives the first signal, for the exit code. Main thread only (elsewhere, nothing is installed)."""
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if received:
            server.force_exit = True
        else:
            received.append(signum)
        server.should_exit = True

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    old = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield received
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
