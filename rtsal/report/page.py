"""The review page as one self-contained HTML file, and the index page of ``rtsal batch --report``.

The page is ``assets/page.html`` with its style (``page.css``), its script (``page.js``), the run's data
(JSON) and the review video (base64 MP4) put inline: nothing is fetched when it opens (a
Content-Security-Policy forbids it too), so it works from a ``file://`` URL, offline, and as a mail
attachment. Files are written atomically (:mod:`rtsal.outputs`).
"""

from __future__ import annotations

import base64
import html
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from rtsal.outputs import atomic_write_text

__all__ = ["render_index", "render_page", "write_index", "write_page"]


def _asset(name: str) -> str:
    return resources.files("rtsal.report").joinpath("assets", name).read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element (no ``</``, no ``<!--``)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def render_page(data: dict[str, Any], video: bytes) -> str:
    """The page's HTML for ``data`` (see :func:`rtsal.report.review.page_data`) and the review video."""
    out = _asset("page.html")
    parts = {
        "__TITLE__": html.escape(str(data.get("title", ""))),
        "__CSS__": _asset("page.css"),
        "__JS__": _asset("page.js"),
        "__DATA__": _script_json(data),
        "__VIDEO__": base64.b64encode(video).decode("ascii"),
    }
    for key in ("__TITLE__", "__CSS__", "__JS__", "__DATA__"):  # the video last: nothing is searched in it
        out = out.replace(key, parts[key], 1)
    head, tail = out.split("__VIDEO__", 1)
    return head + parts["__VIDEO__"] + tail


def write_page(path: str | os.PathLike, data: dict[str, Any], video: bytes) -> Path:
    """Write the page to ``path`` atomically."""
    return atomic_write_text(path, render_page(data, video))


def render_index(rows: list[dict[str, Any]], title: str = "rtsal batch review") -> str:
    """A page with a row per video: name, status, frames, duration, main classes, stability, events, and a
    link to its review page (relative, so the folder can move)."""

    def cell(v: Any) -> str:
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    body = []
    for r in rows:
        link = r.get("page")
        name = html.escape(str(r.get("name", "")))
        first = f'<td><a href="{html.escape(link)}">{name}</a></td>' if link else f"<td>{name}</td>"
        s = r.get("summary") or {}
        st = s.get("stability") or {}
        ev = s.get("events") or {}
        body.append(
            "<tr>"
            + first
            + cell(r.get("status"))
            + cell(s.get("frames"))
            + cell(s.get("duration"))
            + cell(", ".join(s.get("classes", [])))
            + cell(None if st.get("mean") is None else f"{st['mean']:.4f}")
            + cell(" / ".join(str(ev.get(k, 0)) for k in ("top1", "low", "unstable")))
            + cell(r.get("error"))
            + "</tr>"
        )
    css = _asset("page.css")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{css} main {{ display: block; }}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{len(rows)} video(s)</p></header><main><section>"
        "<table><thead><tr><th>video</th><th>status</th><th>frames</th><th>duration s</th>"
        "<th>main top-1 classes</th><th>mean warping error</th><th>events: top-1 / low / unstable</th>"
        "<th>error</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></section></main></body></html>"
    )


def write_index(
    path: str | os.PathLike, rows: list[dict[str, Any]], title: str = "rtsal batch review"
) -> Path:
    """Write the index page to ``path`` atomically."""
    return atomic_write_text(path, render_index(rows, title))
