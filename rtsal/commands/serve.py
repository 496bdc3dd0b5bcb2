"""``rtsal serve``: the live overlay in a browser tab. Wiring only: the options, the engine built as
``rtsal webcam`` builds it, and :func:`rtsal.serve.server.run_server`."""

from __future__ import annotations

import argparse

from rtsal.commands.common import (
    add_engine_options,
    add_threads_option,
    add_view_options,
    check_engine_args,
    check_view_args,
    finite_float,
    plan_streams,
)
from rtsal.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="live saliency overlay in a browser tab (camera or upload), for SSH, containers and WSL",
        description="Serve a page that sends the browser's camera to the engine over a WebSocket and shows "
        "the overlay, the top-5 classes and a HUD (frames per second, capture-to-display latency, saliency "
        "overhead); it also explains an uploaded image or short video. The first line printed is the "
        "address to open, with its access token. Binds to 127.0.0.1 unless --host says otherwise; forward "
        "the port to reach it from another machine (docs/serve.md).",
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every "
                   "interface, still behind the token)")
    g.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    g.add_argument("--max-clients", type=int, default=4, metavar="N",
                   help="pages connected at once (default: 4)")
    g.add_argument("--max-upload-mb", type=finite_float, default=64.0, metavar="MB",
                   help="largest uploaded image or video (default: 64)")
    g.add_argument("--max-video-s", type=finite_float, default=60.0, metavar="S",
                   help="longest uploaded video, seconds (default: 60)")
    g.add_argument("--smooth", type=finite_float, default=0.0, metavar="0..1",
                   help="the page's initial temporal smoothing of the maps (default: 0, off)")
    add_threads_option(g)
    add_engine_options(p, compile_default=True)
    add_view_options(p)
    return p


def check_serve_args(args: argparse.Namespace) -> None:
    """Usage checks before the model loads (exit 2)."""
    check_view_args(args)
    plan_streams(args)
    check_engine_args(args)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be within 0..65535, got {args.port}")
    if not 1 <= args.max_clients <= 64:
        raise UsageError(f"--max-clients must be within 1..64, got {args.max_clients}")
    if not 0 < args.max_upload_mb <= 4096:
        raise UsageError(f"--max-upload-mb must be within 0..4096, got {args.max_upload_mb}")
    if not 0 < args.max_video_s <= 3600:
        raise UsageError(f"--max-video-s must be within 0..3600, got {args.max_video_s}")
    if not 0.0 <= args.smooth < 1.0:
        raise UsageError(f"--smooth must be within 0..1 (1 excluded), got {args.smooth}")


def run(args: argparse.Namespace) -> int:
    import cv2  # noqa: F401  (OpenCV before PyAV, as every command that may decode video)

    from rtsal.serve import require_web

    check_serve_args(args)
    require_web()
    from rtsal.commands.common import apply_threads, make_runner
    from rtsal.frame.clips import frame_explainer
    from rtsal.serve.protocol import ClientSettings, Limits
    from rtsal.serve.server import ServeOptions, run_server

    apply_threads(args)
    explainer = frame_explainer(make_runner(args), args.method, target=args.target, layer=args.target_layer,
                                cskip=args.cskip)
    if explainer.sequential:
        explainer.close()
        raise UsageError(f"rtsal serve explains image models; {args.model} explains clips (use rtsal webcam)")
    limits = Limits(upload_bytes=int(args.max_upload_mb * 2**20), video_seconds=args.max_video_s)
    defaults = ClientSettings(method=args.method, view=args.view, cmap=args.cmap, alpha=args.alpha,
                              smooth=args.smooth)
    options = ServeOptions(host=args.host, port=args.port, max_clients=args.max_clients,
                           streams=args.streams_n, limits=limits, defaults=defaults, model=args.model)
    return run_server(explainer, options)
