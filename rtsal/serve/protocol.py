"""What crosses the WebSocket and the upload route, checked before anything is decoded (torch-free).

Messages from the page:

- **binary, a camera frame**: 4 bytes, the page's frame id (unsigned, big-endian), then one JPEG picture;
- **text, settings**: a JSON object ``{"type": "settings", "method", "view", "cmap", "alpha", "smooth"}``
  (any subset of those keys).

Messages to the page:

- **binary, a result**: 4 bytes, the frame id it answers; 4 bytes, the length of a JSON header (top-5
  classes and the engine's figures); the header; then the drawn picture as JPEG;
- **text**: ``{"type": "hello", ...}`` once (choices, defaults and limits), ``{"type": "error", "message"}``
  before the server closes the socket over a bad message.

Every check raises :class:`BadMessage` with the WebSocket close code to use; the server closes that one
socket and goes on.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "BadMessage",
    "ClientSettings",
    "Limits",
    "image_size",
    "pack_result",
    "parse_frame",
    "parse_settings",
    "sniff_upload",
]

# WebSocket close codes (RFC 6455)
POLICY = 1008
TOO_BIG = 1009
BAD_DATA = 1007
UNSUPPORTED = 1003
TRY_LATER = 1013


class BadMessage(ValueError):
    """A message the server refuses; ``code`` is the WebSocket close code."""

    def __init__(self, message: str, code: int = BAD_DATA) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """Sizes the server accepts (bytes and pixels)."""

    frame_bytes: int = 2 * 2**20  # one camera frame message
    text_bytes: int = 4096  # one settings message
    frame_side: int = 2048  # the longest side of a camera frame
    upload_bytes: int = 64 * 2**20  # one uploaded image or video
    upload_side: int = 4096  # the longest side of an uploaded image or video
    video_seconds: float = 60.0  # the longest uploaded video
    min_side: int = 8


@dataclass(frozen=True)
class ClientSettings:
    """How one page wants its frames explained and drawn."""

    method: str = "fastcam"
    view: str = "overlay"
    cmap: str = "jet"
    alpha: float = 0.5
    smooth: float = 0.0


def parse_settings(
    text: str,
    current: ClientSettings,
    methods: tuple[str, ...],
    views: tuple[str, ...],
    cmaps: tuple[str, ...],
) -> ClientSettings:
    """A settings message -> the new settings; :class:`BadMessage` for anything but the known keys with
    values of the right type and range."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise BadMessage("settings: not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") != "settings":
        raise BadMessage('a text message must be a JSON object with "type": "settings"')
    unknown = set(msg) - {"type", "method", "view", "cmap", "alpha", "smooth"}
    if unknown:
        raise BadMessage(f"settings: unknown key(s) {sorted(unknown)}")
    changes: dict[str, Any] = {}
    for key, choices in (("method", methods), ("view", views), ("cmap", cmaps)):
        if key in msg:
            if msg[key] not in choices:
                raise BadMessage(f"settings: {key} must be one of {', '.join(choices)}")
            changes[key] = msg[key]
    for key, high, closed in (("alpha", 1.0, True), ("smooth", 1.0, False)):
        if key in msg:
            v = msg[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BadMessage(f"settings: {key} must be a number")
            if not (0.0 <= v <= high if closed else 0.0 <= v < high):
                raise BadMessage(f"settings: {key} must be within 0..1" + ("" if closed else " (1 excluded)"))
            changes[key] = float(v)
    return replace(current, **changes)


def parse_frame(data: bytes, limits: Limits) -> tuple[int, bytes]:
    """A camera frame message -> (frame id, JPEG bytes), checked: size, JPEG signature, picture size."""
    if len(data) > limits.frame_bytes:
        raise BadMessage(f"frame message of {len(data)} bytes; the limit is {limits.frame_bytes}", TOO_BIG)
    if len(data) < 8:
        raise BadMessage("frame message too short")
    (fid,) = struct.unpack(">I", data[:4])
    jpeg = data[4:]
    kind, size = image_size(jpeg)
    if kind != "jpeg":
        raise BadMessage("a frame must be a JPEG picture", UNSUPPORTED)
    check_side(size, limits.frame_side, limits.min_side)
    return fid, jpeg


def check_side(size: tuple[int, int], largest: int, smallest: int) -> None:
    w, h = size
    if max(w, h) > largest or min(w, h) < smallest:
        raise BadMessage(f"picture of {w}x{h}: each side must be within {smallest}..{largest} pixels",
                         TOO_BIG if max(w, h) > largest else BAD_DATA)


def image_size(data: bytes) -> tuple[str, tuple[int, int]]:
    """("jpeg" | "png", (width, height)) read from the header alone, so that no decoder ever sees a
    picture bigger than the limits; :class:`BadMessage` for anything else or a broken header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadMessage("broken PNG header")
        w, h = struct.unpack(">II", data[16:24])
        return "png", (w, h)
    if data[:3] != b"\xff\xd8\xff":
        raise BadMessage("not a JPEG or PNG picture", UNSUPPORTED)
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise BadMessage("broken JPEG header")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise BadMessage("broken JPEG header")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return "jpeg", (w, h)
        if marker == 0xDA:  # scan data before any frame header
            break
        i += 2 + length
    raise BadMessage("JPEG without a frame header")


VIDEO_SIGNATURES = (
    (4, b"ftyp", "mp4"),  # MP4, MOV, M4V
    (0, b"\x1a\x45\xdf\xa3", "webm"),  # Matroska, WebM
    (0, b"RIFF", "avi"),
)


def sniff_upload(head: bytes, content_type: str) -> str:
    """The upload's kind from its first bytes, which must agree with its ``Content-Type``: "jpeg", "png"
    (images) or "mp4", "webm", "avi" (videos); :class:`BadMessage` otherwise."""
    major = content_type.split(";")[0].strip().lower().split("/")[0]
    if major == "image":
        kind, _ = image_size(head)
        return kind
    if major == "video":
        for offset, magic, kind in VIDEO_SIGNATURES:
            if head[offset : offset + len(magic)] == magic:
                if kind == "avi" and head[8:12] != b"AVI ":
                    break
                return kind
        raise BadMessage("not an MP4, MOV, WebM, MKV or AVI video", UNSUPPORTED)
    raise BadMessage("upload an image/* or video/* file (Content-Type)", UNSUPPORTED)


def pack_result(fid: int, header: dict[str, Any], jpeg: bytes) -> bytes:
    """A result message: frame id, JSON header length, header, JPEG."""
    meta = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">II", fid, len(meta)) + meta + jpeg
