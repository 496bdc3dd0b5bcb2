"""``rtsal serve``: the message checks, every security rule against the real server (a subprocess: HTTP with
urllib, WebSockets with the websockets client), uploads, Ctrl-C, and the page in a real browser (Debian's
headless Chromium, driven by Playwright, its camera a fake device playing the bundled demo clip).

Under ``CI=true`` a missing browser or Playwright fails the browser test instead of skipping it (CI installs
them: .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
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
        parse_frame(struct.pack(">I", 1) + cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes(), limits)
    assert e.value.code == 1003
    with pytest.raises(BadMessage):
        parse_frame(b"\x00\x01", limits)


def test_settings_are_type_checked():
    args = (ClientSettings(), ("fastcam", "smoe"), ("overlay", "lovi"), ("jet", "turbo"))
    new = parse_settings('{"type": "settings", "method": "smoe", "alpha": 0.25, "smooth": 0.5}', *args)
    assert new == ClientSettings(method="smoe", alpha=0.25, smooth=0.5)
    for bad in ('{"type": "settings", "method": "nope"}', '{"type": "settings", "alpha": 2}',
                '{"type": "settings", "alpha": "0.5"}', '{"type": "settings", "alpha": true}',
                '{"type": "settings", "smooth": 1}', '{"type": "settings", "alpha": NaN}',
                '{"type": "settings", "x": 1}', '{"type": "other"}', "[1, 2]", "{not json",
                "[" * 100_000):
        with pytest.raises(BadMessage):
            parse_settings(bad, *args)


def test_uploads_must_be_what_they_say():
    jpg = jpeg(photo("coffee"))
    assert sniff_upload(jpg, "image/jpeg") == "jpeg"
    assert sniff_upload((DATA / "demo.mp4").read_bytes()[:64], "video/mp4") == "mp4"
    for head, kind in ((jpg, "video/mp4"), (b"<html>" + bytes(60), "image/png"), (jpg, "text/html"),
                       (b"RIFF\x00\x00\x00\x00WAVE", "video/x-msvideo")):
        with pytest.raises(BadMessage):
            sniff_upload(head, kind)


# -- the real server ----------------------------------------------------------------------------------------
class Served:
    """A running ``rtsal serve`` subprocess, its address and token, and its private TMPDIR."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "RTSAL_COMPILE": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "rtsal", "serve", "--port", "0", *args], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), (self.url, self.stop()[1])
        self.base, self.token = self.url.split("/?token=")
        self.port = int(self.base.rsplit(":", 1)[1])
        self.host = f"127.0.0.1:{self.port}"

    def get(self, path: str, token: str | None = "good", headers: dict | None = None, data: bytes | None = None):
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
        assert header["method"] == "fastcam" and header["forward_ms"] > 0 and header["saliency_ms"] is not None
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

    for kw in ({"token": None}, {"token": "wrong"}, {"origin": "http://evil.example"},
               {"origin": f"http://localhost:{served.port + 1}"}):
        with pytest.raises(InvalidStatus) as e:
            served.ws(**kw).__enter__()
        assert e.value.response.status_code == 403, kw
    with served.ws(origin=None) as ws:  # a script (no Origin) with the token
        hello(ws)
    # a page on another site posting an upload with the token it somehow learnt: refused too
    assert served.get("/api/explain", data=jpeg(photo("coffee")), headers={
        "Content-Type": "image/jpeg", "Origin": "http://evil.example"})[0] == 403


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
            ws.send(message)
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
    status, headers, body = served.get(f"/api/explain?settings={urllib.request.quote(settings)}", data=image,
                                       headers={"Content-Type": "image/jpeg"})
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
    assert served.get(f"/api/explain?settings={urllib.request.quote(bad)}", data=image,
                      headers={"Content-Type": "image/jpeg"})[0] == 400
    assert served.get("/api/explain", token=None, data=image, headers={"Content-Type": "image/jpeg"})[0] == 403
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
        r = subprocess.run([sys.executable, "-m", "rtsal", "serve", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
