"""``rtsal serve``: the message checks, every security rule against the real server (a subprocess: HTTP with
urllib, WebSockets with the websockets client), uploads, Ctrl-C, and the page in a real browser (Debian's
headless Chromium, driven by Playwright, its camera a fake device playing the bundled demo clip).

Under ``CI=true`` a missing browser or Playwright fails the browser test instead of skipping it (CI installs
them: .ci/run)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import DATA, photo

from rtsal.serve.protocol import (
    BadMessage,
    ClientSettings,
    Limits,
    image_size,
    parse_frame,
    parse_settings,
    sniff_upload,
)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
websockets_sync = pytest.importorskip("websockets.sync.client")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RTSAL_CHROMIUM", "/usr/bin/chromium")
SERVE = ["--size", "128", "--max-clients", "2", "--max-upload-mb", "1"]


def jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


# -- the checks on messages, no server ----------------------------------------------------------------------
def test_image_size_reads_jpeg_and_png_headers_only():
    rgb = cv2.resize(photo("coffee"), (320, 200))
    assert image_size(jpeg(rgb)) == ("jpeg", (320, 200))
    ok, png = cv2.imencode(".png", rgb)
    assert image_size(png.tobytes()) == ("png", (320, 200))
    progressive = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert image_size(progressive) == ("jpeg", (320, 200))
    for bad in (b"GIF89a" + bytes(20), b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x01junk"):
        with pytest.raises(BadMessage):
            image_size(bad)


def test_frames_are_checked_before_decoding():
    limits = Limits(frame_bytes=200_000, frame_side=640)
    data = jpeg(cv2.resize(photo("coffee"), (320, 240)))
    assert parse_frame(struct.pack(">I", 7) + data, limits) == (7, data)
    big = jpeg(cv2.resize(photo("coffee"), (800, 600)))
    with pytest.raises(BadMessage) as e:
        parse_frame(struct.pack(">I", 1) + big, limits)  # a side over the limit
    assert e.value.code == 1009
    with pytest.raises(BadMessage) as e:
        parse_frame(bytes(200_001), limits)
    assert e.value.code == 1009
    with pytest.raises(BadMessage) as e:
        parse_frame(
            struct.pack(">I", 1) + cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes(), limits
        )
    assert e.value.code == 1003
    with pytest.raises(BadMessage):
        parse_frame(b"\x00\x01", limits)


def test_settings_are_type_checked():
    args = (ClientSettings(), ("fastcam", "smoe"), ("overlay", "lovi"), ("jet", "turbo"))
    new = parse_settings('{"type": "settings", "method": "smoe", "alpha": 0.25, "smooth": 0.5}', *args)
    assert new == ClientSettings(method="smoe", alpha=0.25, smooth=0.5)
    for bad in (
        '{"type": "settings", "method": "nope"}',
        '{"type": "settings", "alpha": 2}',
        '{"type": "settings", "alpha": "0.5"}',
        '{"type": "settings", "alpha": true}',
        '{"type": "settings", "smooth": 1}',
        '{"type": "settings", "alpha": NaN}',
        '{"type": "settings", "x": 1}',
        '{"type": "other"}',
        "[1, 2]",
        "{not json",
        "[" * 100_000,
    ):
        with pytest.raises(BadMessage):
            parse_settings(bad, *args)


def test_uploads_must_be_what_they_say():
    jpg = jpeg(photo("coffee"))
    assert sniff_upload(jpg, "image/jpeg") == "jpeg"
    assert sniff_upload((DATA / "demo.mp4").read_bytes()[:64], "video/mp4") == "mp4"
    for head, kind in (
        (jpg, "video/mp4"),
        (b"<html>" + bytes(60), "image/png"),
        (jpg, "text/html"),
        (b"RIFF\x00\x00\x00\x00WAVE", "video/x-msvideo"),
    ):
        with pytest.raises(BadMessage):
            sniff_upload(head, kind)


# -- the real server ----------------------------------------------------------------------------------------
class Served:
    """A running ``rtsal serve`` subprocess, its address and token, and its private TMPDIR."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "RTSAL_COMPILE": "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtsal", "serve", "--port", "0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), (self.url, self.stop()[1])
        self.base, self.token = self.url.split("/?token=")
        self.port = int(self.base.rsplit(":", 1)[1])
        self.host = f"127.0.0.1:{self.port}"

    def get(
        self, path: str, token: str | None = "good", headers: dict | None = None, data: bytes | None = None
    ):
        """(status, headers, body) of a request; ``token`` "good" means the server's."""
        token = self.token if token == "good" else token
        sep = "&" if "?" in path else "?"
        url = self.base + path + (f"{sep}token={token}" if token is not None else "")
        req = urllib.request.Request(url, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def ws(self, token: str | None = "good", origin: str | None = "self", **kw):
        token = self.token if token == "good" else token
        origin = f"http://{self.host}" if origin == "self" else origin
        uri = f"ws://{self.host}/ws" + (f"?token={token}" if token is not None else "")
        return websockets_sync.connect(uri, origin=origin, open_timeout=30, max_size=None, **kw)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("serve") / "tmp", *SERVE)
    try:
        yield s
    finally:
        s.stop()


def hello(ws) -> dict:
    msg = json.loads(ws.recv(timeout=30))
    assert msg["type"] == "hello", msg
    return msg


def explain_frames(ws, n: int, rgb: np.ndarray, first_id: int = 1) -> list[tuple[int, dict, np.ndarray]]:
    """Send ``n`` frames one at a time, each answered before the next: (id, header, picture) per result."""
    out = []
    for fid in range(first_id, first_id + n):
        ws.send(struct.pack(">I", fid) + jpeg(rgb))
        data = ws.recv(timeout=60)
        rid, length = struct.unpack(">II", data[:8])
        header = json.loads(data[8 : 8 + length])
        picture = cv2.imdecode(np.frombuffer(data[8 + length :], np.uint8), cv2.IMREAD_COLOR)
        out.append((rid, header, picture[..., ::-1]))
    return out


def test_frames_over_the_websocket_come_back_explained(served):
    frame = cv2.resize(photo("coffee"), (320, 240))
    before = json.loads(served.get("/api/stats")[2])
    with served.ws() as ws:
        info = hello(ws)
        assert "fastcam" in info["methods"] and "lovi" in info["views"] and info["inflight"] >= 2
        results = explain_frames(ws, 3, frame)
        assert [r[0] for r in results] == [1, 2, 3]
        rid, header, picture = results[-1]
        assert picture.shape == (240, 320, 3) and np.abs(picture.astype(int) - frame).mean() > 10  # drawn on
        assert len(header["top"]) == 5 and header["top"][0][1] >= header["top"][4][1]
        assert (
            header["method"] == "fastcam" and header["forward_ms"] > 0 and header["saliency_ms"] is not None
        )
        ws.send(json.dumps({"type": "settings", "view": "map", "method": "smoe"}))
        _, header2, mapped = explain_frames(ws, 1, frame, first_id=4)[0]
        assert header2["method"] == "smoe" and header2["view"] == "map"
        assert np.abs(mapped.astype(int) - picture).mean() > 10
    stats = json.loads(served.get("/api/stats")[2])
    assert stats["frames"] >= before["frames"] + 4 and stats["fps"] >= 0 and stats["clients"] == 0


def test_every_request_needs_the_token(served):
    for path in ("/", "/api/stats", "/api/info", "/static/app.js"):
        assert served.get(path)[0] == 200, path
        assert served.get(path, token=None)[0] == 403, path
        assert served.get(path, token="wrong")[0] == 403, path
        assert served.get(path, token=served.token[:-1])[0] == 403, path
    assert served.get("/", token=None, headers={"X-Rtsal-Token": served.token})[0] == 200
    status, headers, body = served.get("/")
    assert served.token in body.decode() and headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"http://" not in body and b"https://" not in body  # nothing from the internet
    stats = json.loads(served.get("/api/stats")[2])
    assert {"frames", "fps", "clients", "rss_mb"} <= set(stats)
    assert served.get("/static/../../etc/passwd")[0] in (403, 404)
    assert served.get("/static/index.html")[0] == 404


def test_the_websocket_needs_the_token_and_its_own_origin(served):
    from websockets.exceptions import InvalidStatus

    for kw in (
        {"token": None},
        {"token": "wrong"},
        {"origin": "http://evil.example"},
        {"origin": f"http://localhost:{served.port + 1}"},
    ):
        with pytest.raises(InvalidStatus) as e:
            served.ws(**kw).__enter__()
        assert e.value.response.status_code == 403, kw
    with served.ws(origin=None) as ws:  # a script (no Origin) with the token
        hello(ws)
    # a page on another site posting an upload with the token it somehow learnt: refused too
    assert (
        served.get(
            "/api/explain",
            data=jpeg(photo("coffee")),
            headers={"Content-Type": "image/jpeg", "Origin": "http://evil.example"},
        )[0]
        == 403
    )


def test_a_foreign_host_header_is_refused(served):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    assert served.get("/api/stats", headers={"Host": f"evil.example:{served.port}"})[0] == 403
    assert served.get("/api/stats", headers={"Host": f"localhost:{served.port}"})[0] == 200


def test_a_bad_message_closes_that_socket_never_the_server(served):
    from websockets.exceptions import ConnectionClosed

    frame = cv2.resize(photo("coffee"), (160, 120))
    cases = [
        (struct.pack(">I", 1) + bytes(3 * 2**20), 1009),  # oversized
        (struct.pack(">I", 1) + b"GIF89a" + bytes(100), 1003),  # not a JPEG
        (struct.pack(">I", 1) + jpeg(cv2.resize(photo("coffee"), (2100, 100))), 1009),  # too wide
        ('{"type": "settings", "alpha": 7}', 1007),  # out of range
        ("x" * 5000, 1009),  # an oversized text message
        ("not json", 1007),
    ]
    for message, code in cases:
        with served.ws() as ws:
            hello(ws)
            try:
                ws.send(message)
            except ConnectionClosed:
                # the server refused an oversized message before the client had sent all of it: the socket
                # was closed under the sender (a reset, so no close frame reaches this client)
                assert code == 1009, message[:20]
                continue
            with pytest.raises(ConnectionClosed) as e:
                while True:
                    ws.recv(timeout=30)
            assert e.value.rcvd is not None and e.value.rcvd.code == code, (message[:20], e.value)
    assert served.proc.poll() is None
    with served.ws() as ws:  # the server goes on
        hello(ws)
        assert explain_frames(ws, 1, frame)[0][0] == 1


def test_clients_are_bounded(served):
    from websockets.exceptions import ConnectionClosed

    with served.ws() as a, served.ws() as b:
        hello(a), hello(b)
        with served.ws() as c:
            msg = json.loads(c.recv(timeout=30))
            assert msg["type"] == "error" and "client" in msg["message"]
            with pytest.raises(ConnectionClosed) as e:
                c.recv(timeout=30)
            assert e.value.rcvd.code == 1013
    with served.ws() as d:  # a place is free again
        hello(d)


def test_uploads_are_explained_checked_and_deleted(served):
    private = [p for p in served.tmp.iterdir() if p.name.startswith("rtsal-serve-")]
    assert len(private) == 1 and (private[0].stat().st_mode & 0o077) == 0  # 0700
    image = jpeg(cv2.resize(photo("coffee"), (320, 240)))
    settings = json.dumps({"type": "settings", "view": "side", "cmap": "turbo"})
    status, headers, body = served.get(
        f"/api/explain?settings={urllib.request.quote(settings)}",
        data=image,
        headers={"Content-Type": "image/jpeg"},
    )
    assert status == 200 and headers["Content-Type"] == "image/png"
    picture = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (240, 960, 3)  # side by side: frame, map, overlay
    assert json.loads(headers["X-Rtsal-Top"])[0][0]

    clip = (DATA / "demo.mp4").read_bytes()
    status, headers, body = served.get("/api/explain", data=clip, headers={"Content-Type": "video/mp4"})
    assert status == 200 and headers["Content-Type"] == "video/mp4", body[:200]
    out = served.tmp / "explained.mp4"
    out.write_bytes(body)
    import av

    with av.open(str(out)) as c:
        assert c.streams.video[0].width == 480 and sum(1 for _ in c.decode(video=0)) == 184
    out.unlink()

    assert served.get("/api/explain", data=image, headers={"Content-Type": "video/mp4"})[0] == 415
    assert served.get("/api/explain", data=b"<script>" * 10, headers={"Content-Type": "image/png"})[0] == 415
    assert served.get("/api/explain", data=bytes(2**20 + 1), headers={"Content-Type": "image/jpeg"})[0] == 413
    bad = json.dumps({"type": "settings", "method": "rm -rf"})
    assert (
        served.get(
            f"/api/explain?settings={urllib.request.quote(bad)}",
            data=image,
            headers={"Content-Type": "image/jpeg"},
        )[0]
        == 400
    )
    assert (
        served.get("/api/explain", token=None, data=image, headers={"Content-Type": "image/jpeg"})[0] == 403
    )
    assert list(private[0].iterdir()) == []  # every upload's folder is gone


def _outside_address() -> str | None:
    """An address of this machine that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # no packet is sent
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_binds_beyond_loopback_only_when_asked(served, tmp_path):
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback")
    with pytest.raises(OSError):
        socket.create_connection((outside, served.port), timeout=5).close()
    wide = Served(tmp_path / "tmp", *SERVE, "--host", "0.0.0.0")
    try:
        assert wide.url.startswith("http://127.0.0.1:")  # the address to open is still loopback
        socket.create_connection((outside, wide.port), timeout=5).close()
        base = f"http://{outside}:{wide.port}"
        with urllib.request.urlopen(f"{base}/api/stats?token={wide.token}", timeout=30) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/api/stats", timeout=30)
        assert e.value.code == 403
    finally:
        code, err = wide.stop()
    assert "beyond this machine" in err


def test_ctrl_c_stops_cleanly_with_exit_130_and_no_files(tmp_path):
    s = Served(tmp_path / "tmp", *SERVE)
    with s.ws() as ws:
        hello(ws)
        explain_frames(ws, 1, cv2.resize(photo("coffee"), (160, 120)))
        code, err = s.stop(signal.SIGINT)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "rtsal serve: interrupted" and "Traceback" not in err
    assert list((tmp_path / "tmp").iterdir()) == []
    s = Served(tmp_path / "tmp2", *SERVE)
    code, err = s.stop(signal.SIGTERM)
    assert code == 130 and "Traceback" not in err and list((tmp_path / "tmp2").iterdir()) == []


def test_bad_options_exit_2_before_the_model(tmp_path):
    for args in (["--port", "70000"], ["--max-clients", "0"], ["--alpha", "3"], ["--smooth", "1"]):
        r = subprocess.run(
            [sys.executable, "-m", "rtsal", "serve", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


# -- the page in a real browser -----------------------------------------------------------------------------
def _browser_or_skip() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (Debian's chromium: .ci/run installs it)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test; missing: {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")


BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def canvas(page, selector: str = "#view") -> np.ndarray:
    """The canvas as RGB uint8, read through the page (what the user sees)."""
    import base64

    url = page.evaluate(f"document.querySelector('{selector}').toDataURL('image/png')")
    data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def wait_for(page, js: str, timeout: float = 120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = page.evaluate(js)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {js}: {page.evaluate('JSON.stringify(rtsal.stats.errors)')}")


def detail(picture: np.ndarray) -> float:
    """Fine structure of a map picture: variance of its Laplacian (a 7x7 CAM upsampled has little)."""
    grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


@pytest.mark.slow
def test_the_page_in_chromium_shows_overlays_switches_methods_and_explains_uploads(tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    from rtsal.io.video import VideoReader
    from rtsal.io.y4m import video_to_y4m

    with VideoReader(DATA / "demo.mp4") as reader:
        raw = [cv2.resize(f.image, (640, 480), interpolation=cv2.INTER_AREA) for f in reader]
    clip = tmp_path / "clip.y4m"
    video_to_y4m(DATA / "demo.mp4", clip, 640, 480, 30)
    s = Served(tmp_path / "tmp", "--max-upload-mb", "8")
    figures: dict = {}
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(
                executable_path=CHROMIUM, args=[*BROWSER_FLAGS, f"--use-file-for-fake-video-capture={clip}"]
            )
            try:
                page = b.new_page(viewport={"width": 1200, "height": 760})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(s.url)
                wait_for(page, "rtsal.stats.displayed >= 5")
                # the overlay: the camera's frames with the jet map over them, at the camera's size
                shown = canvas(page)
                assert shown.shape == (480, 640, 3)
                closest = min(np.abs(shown.astype(int) - f).mean() for f in raw)
                assert closest > 15, closest  # not any frame of the clip: a map is blended over it
                # the HUD updates: fps, latency and the engine's saliency overhead
                first = page.inner_text("#hud")
                wait_for(page, "rtsal.stats.displayed >= 15")
                # the HUD is redrawn a few times a second, not per frame: wait for the next redraw
                wait_for(page, f"document.querySelector('#hud').innerText !== {json.dumps(first)}")
                hud = page.inner_text("#hud")
                assert hud != first and "fps" in hud and "ms (+" in page.inner_text("#hud-overhead")
                assert int(page.inner_text("#hud-frames")) >= 15
                assert float(page.inner_text("#hud-fps")) > 0 and page.inner_text("#hud-latency") != "–"
                assert len(page.query_selector_all("#top5 li")) == 5

                # the same clip measured: frames per second and capture-to-display latency (printed)
                start = page.evaluate(
                    "[rtsal.stats.displayed, performance.now(), rtsal.stats.latencies.length]"
                )
                time.sleep(12)
                end = page.evaluate(
                    f"[rtsal.stats.displayed, performance.now(), rtsal.stats.latencies.slice({start[2]})]"
                )
                figures["browser_fps"] = (end[0] - start[0]) / ((end[1] - start[1]) / 1000)
                figures["latency_median_ms"] = float(np.median(end[2]))
                figures["server"] = json.loads(s.get("/api/stats")[2])

                # switching method changes the map: the map view, SMOE (fine detail), Grad-CAM (7x7, smooth)
                page.select_option("#view-select", "map")
                page.select_option("#method", "smoe")
                wait_for(page, "rtsal.stats.method === 'smoe' && rtsal.stats.view === 'map'")
                wait_for(page, f"rtsal.stats.displayed >= {end[0] + 3}")
                smoe_map = canvas(page)
                page.select_option("#method", "gradcam")
                wait_for(page, "rtsal.stats.method === 'gradcam'")
                at = page.evaluate("rtsal.stats.displayed")
                wait_for(page, f"rtsal.stats.displayed >= {at + 2}")
                cam_map = canvas(page)
                assert np.abs(smoe_map.astype(int) - cam_map).mean() > 10
                assert detail(smoe_map) > 3 * detail(cam_map), (detail(smoe_map), detail(cam_map))

                # an upload returns its explanation and a download
                page.set_input_files("#upload", str(DATA / "coffee.jpg"))
                upload = wait_for(page, "rtsal.stats.upload")
                assert upload["ok"] and upload["type"] == "image/png" and upload["top"], upload
                wait_for(page, "document.querySelector('#upload-output').naturalWidth > 0")
                assert page.get_attribute("#download", "href").startswith("blob:")
                assert page.get_attribute("#download", "download") == "coffee-rtsal.png"
                assert not errors, errors
                page.screenshot(path=str(tmp_path / "page.png"))
            finally:
                b.close()
    finally:
        code, err = s.stop()
    assert code == 130, err

    # rtsal webcam on the same clip, same engine, no window: the rate the browser client is compared with
    stats_path = tmp_path / "webcam.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtsal",
            "webcam",
            "--source",
            str(clip),
            "--no-window",
            "--max-frames",
            "150",
            "--stats-json",
            str(stats_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RTSAL_COMPILE": "0"},
    )
    assert r.returncode == 0, r.stderr
    webcam_fps = json.loads(stats_path.read_text())["fps"]
    print(
        f"\nrtsal serve in Chromium at 640x480: {figures['browser_fps']:.1f} fps "
        f"({100 * figures['browser_fps'] / webcam_fps:.0f}% of rtsal webcam --source on the same clip: "
        f"{webcam_fps:.1f} fps); capture-to-display latency median {figures['latency_median_ms']:.0f} ms; "
        f"server: forward {figures['server']['forward_ms']} ms, "
        f"saliency {figures['server']['saliency_ms']} ms "
        f"(+{figures['server']['saliency_overhead_pct']}%) [timings on a loaded machine]"
    )


def test_help_imports_no_web_framework_and_a_missing_one_is_one_line():
    code = (
        "import sys, rtsal.cli; rtsal.cli.build_parser(); "
        "print([m for m in ('torch', 'starlette', 'uvicorn', 'websockets') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    code = "import sys; sys.modules['uvicorn'] = None; from rtsal.cli import main; sys.exit(main(['serve']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "rtsal serve: error: rtsal serve needs a web server (uvicorn is not installed): "
        'pip install "rtsal[serve]"'
    ]
