"""``rtsal video --report`` and ``rtsal batch --report`` without a browser: the page's data agrees with the
CSV (temporal column) and the run, bad output paths are refused before any work, a video without frames
gets no page, and the batch index links every page. The browser checks are in test_review_browser.py."""

from __future__ import annotations

import base64
import csv
import json
import re
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import make_clip, pan_frames

from rtsal.cli import main
from rtsal.report.page import render_index

ENGINE = ["--model", "resnet18", "--weights", "none", "--size", "64", "--batch", "2", "--no-labels"]


def page_data(path: Path) -> tuple[dict, bytes]:
    """The JSON and the review video inside a page."""
    text = path.read_text()
    data = re.search(r'<script type="application/json" id="rtsal-data">(.*?)</script>', text, re.S).group(1)
    video = re.search(r'<script type="text/plain" id="rtsal-video">(.*?)</script>', text, re.S).group(1)
    return json.loads(data), base64.b64decode(video)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "pan.mp4"
    frames = pan_frames(8, 96, 64, "coffee") + pan_frames(8, 96, 64, "chelsea")
    make_clip(path, 96, 64, [100 * i for i in range(16)], 100, frames=frames)
    return path


@pytest.fixture(scope="module")
def run(clip, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("out")
    paths = {"video": d / "out.mp4", "csv": d / "frames.csv", "page": d / "page.html"}
    code = main(["video", str(clip), "-o", str(paths["video"]), "--csv", str(paths["csv"]),
                 "--report", str(paths["page"]), "--no-progress", *ENGINE])
    assert code == 0
    return paths


def test_page_holds_every_frame_and_agrees_with_the_csv(run):
    data, video = page_data(run["page"])
    rows = list(csv.DictReader(run["csv"].open()))
    assert len(data["frames"]) == len(rows) == 16
    assert [f["i"] for f in data["frames"]] == [int(r["index"]) for r in rows]
    assert [f["t"] for f in data["frames"]] == pytest.approx([float(r["pts"]) for r in rows])
    assert rows[0]["temporal_error"] == "" and data["frames"][0]["err"] is None
    for f, r in zip(data["frames"][1:], rows[1:], strict=True):
        if f["err"] is None:
            assert r["temporal_error"] == ""
        else:
            assert float(r["temporal_error"]) == pytest.approx(f["err"], abs=1e-5)
            assert 0.0 <= f["err"] <= 1.0
        assert [c for c, _ in f["top"]][0] == int(r["class1"])
    # the review video: one atlas frame per frame, at the frames' times
    with av.open(__import__("io").BytesIO(video)) as c:
        decoded = [(fr.time, fr.to_ndarray(format="rgb24")) for fr in c.decode(video=0)]
    assert [round(t, 3) for t, _ in decoded] == [round(f["t"], 3) for f in data["frames"]]
    lay = data["layout"]
    assert decoded[0][1].shape[1] == lay["width"] and len(lay["tiles"]) == len(data["tiles"]) == 1 + 5
    # the settings, the model and the backend of the run
    assert data["settings"]["model"] == "resnet18" and data["settings"]["size"] == 64
    assert data["run"]["backend (frames)"].startswith("eager") and "(16)" in data["run"]["backend (frames)"]
    assert data["stability"]["summary"]["n"] == sum(f["err"] is not None for f in data["frames"])
    assert "http://" not in run["page"].read_text() and "https://" not in run["page"].read_text()


def test_events_list_top1_changes_with_thumbnails(run):
    data, _ = page_data(run["page"])
    tops = [f["top"][0][0] for f in data["frames"]]
    changes = [i for i in range(1, len(tops)) if tops[i] != tops[i - 1]]
    listed = [e["f"] for e in data["events"] if e["kind"] == "top1"]
    assert listed == changes[: len(listed)] and data["event_counts"].get("top1", 0) == len(changes)
    for e in data["events"]:
        assert e["thumb"].startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize("which", ["input", "output", "csv"])
def test_report_path_clashing_with_another_file_is_refused(clip, tmp_path, capsys, which, no_model):
    out, table = tmp_path / "o.mp4", tmp_path / "t.csv"
    report = {"input": clip, "output": out, "csv": table}[which]
    before = clip.read_bytes() if which == "input" else None
    code = main(["video", str(clip), "-o", str(out), "--csv", str(table), "--report", str(report), *ENGINE])
    err = capsys.readouterr().err
    assert code in (1, 2) and len(err.strip().splitlines()) == 1
    assert ("input file" in err) if which == "input" else ("different files" in err)
    if before is not None:
        assert clip.read_bytes() == before
    assert not out.exists()


def test_a_video_without_frames_gets_no_page(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    page = tmp_path / "page.html"
    code = main(["video", str(empty), "-o", str(tmp_path / "o.mp4"), "--report", str(page), *ENGINE])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not page.exists() and not list(tmp_path.glob(".page*"))


def test_batch_writes_a_page_per_video_and_an_index(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # in-process: the same worker code
    root = tmp_path / "in"
    for name, photo in (("a.mp4", "coffee"), ("sub/b.mp4", "rocket")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_clip(root / name, 64, 48, [100 * i for i in range(6)], 100, frames=pan_frames(6, 64, 48, photo))
    (root / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out = tmp_path / "out"
    code = main(["batch", str(root), "-o", str(out), "--report", "--quiet", *ENGINE])
    capsys.readouterr()
    assert code == 1  # bad.mp4 failed, the others are done
    for rel in ("a.html", "sub/b.html"):
        data, _ = page_data(out / rel)
        assert len(data["frames"]) == 6
    index = (out / "index.html").read_text()
    assert 'href="a.html"' in index and 'href="sub/b.html"' in index
    assert "bad.mp4" in index and "failed" in index
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    done = [r for r in recs if r.get("type") == "file" and r["status"] == "done"]
    assert all(r["review"]["frames"] == 6 and r["outputs"]["report"].endswith(".html") for r in done)


def test_index_escapes_names():
    page = render_index([{"name": "<b>x</b>.mp4", "status": "done", "page": "x.html", "summary": None}])
    assert "<b>x</b>" not in page and "&lt;b&gt;" in page


def test_atlas_layout_divides_the_frame_by_a_whole_number():
    from rtsal.report.recorder import atlas_layout

    lay = atlas_layout(720, 1280, 6)
    assert (lay.width, lay.height) == (640, 360) and lay.atlas_size == (600, 640)
    assert atlas_layout(1080, 1920, 6).width == 640 and atlas_layout(120, 160, 1).width == 160
    tiles = np.array(lay.to_json()["tiles"])
    assert np.all(tiles[:, 0] + tiles[:, 2] <= lay.width) and np.all(tiles[:, 1] >= lay.height)


def test_eval_has_a_temporal_section_per_method_and_smoothing(tmp_path, capsys):
    """Steadiness and faithfulness side by side. A still scene with sensor noise: the maps flicker with the
    noise, the random map jumps, the centre map stays put, and the overlay's smoothing makes fastcam
    steadier (the more, the steadier)."""
    clip = tmp_path / "still.mp4"
    rng = np.random.default_rng(0)
    still = pan_frames(1, 96, 64, "coffee")[0].astype(np.float32)
    frames = [np.clip(still + rng.normal(0, 14, still.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    make_clip(clip, 96, 64, [100 * i for i in range(8)], 100, frames=frames)
    out = tmp_path / "eval.json"
    code = main(["eval", str(clip), "--model", "resnet18", "--weights", "none", "--size", "64", "--every",
                 "100", "--methods", "fastcam", "--temporal-frames", "8", "--smooth", "0.5,0.8",
                 "--resamples", "200", "--steps", "4", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "temporal stability: 1 clip(s), 7 consecutive frame pairs" in text
    t = json.loads(out.read_text())["temporal"]
    rows = t["methods"]
    assert list(rows) == ["fastcam", "random", "centre", "fastcam+smooth0.5", "fastcam+smooth0.8"]
    err = {k: v["warp_error"]["mean"] for k, v in rows.items()}
    assert all(v["warp_error"]["n"] == 7 and v["n_ins_minus_del"]["n"] >= 3 for v in rows.values())
    assert err["random"] > 3 * err["fastcam"] > 0
    assert err["centre"] < 0.2 * err["fastcam"]
    assert err["fastcam+smooth0.8"] < err["fastcam+smooth0.5"] < err["fastcam"]
    for k, v in rows.items():
        assert v["n_ins_minus_del"]["mean"] is not None, k


def test_stability_line_summarises_the_run():
    from rtsal.report.review import stability_line

    line = stability_line({"summary": {"mean": 0.01, "median": 0.009, "p95": 0.02, "n": 44}})
    assert "mean 0.0100" in line and "95th percentile 0.0200" in line and "44 frame pairs" in line
    assert "no pair" in stability_line({"summary": {"mean": None, "median": None, "p95": None, "n": 0}})
