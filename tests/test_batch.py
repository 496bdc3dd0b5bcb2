"""``rtsal batch``: a local Dask cluster over generated clips and a corrupt file, a worker killed mid-file,
Ctrl-C then resume, an existing scheduler started here, the in-process fallback without Dask; and the
manifest's atomic lines and resume rules on their own.

The cluster tests start real worker processes that import torch: tens of seconds each on a loaded 2-core
machine, so they are marked ``slow``. Every subprocess has a timeout and is killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from helpers import make_clip, pan_frames

from rtsal.batch.inputs import expand_inputs
from rtsal.batch.manifest import Manifest, plan_resume, read_manifest, settings_sha256, sha256_file
from rtsal.cli import main
from rtsal.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ["--model", "resnet18", "--weights", "none", "--size", "32", "--batch", "2"]


def clip(path: Path, frames: int = 8, seed: int = 0) -> None:
    """A tiny 64x48 mpeg4 + AAC clip at 10 fps: a pan over one of the bundled photographs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    photo = ("coffee", "chelsea", "rocket", "astronaut")[seed % 4]
    make_clip(path, 64, 48, [100 * i for i in range(frames)], 100, frames=pan_frames(frames, 64, 48, photo))


def decoded(path: Path) -> tuple[int, int]:
    """(video frames, audio streams) an independent decode finds."""
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
        return frames, len(c.streams.audio)


def manifest_files(outdir: Path) -> list[dict]:
    lines = (outdir / "manifest.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "file"]


def leftovers(outdir: Path) -> list[Path]:
    return [p for p in outdir.rglob(".*") if "rtsal" in p.name]


@pytest.fixture
def archive(tmp_path) -> Path:
    """4 clips in a tree (mp4, mkv, mov) and one corrupt file."""
    root = tmp_path / "archive"
    for i, name in enumerate(["a.mp4", "b.mkv", "day2/c.mp4", "day2/d.mov"]):
        clip(root / name, frames=6 + i, seed=i)
    (root / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return root


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def rtsal_cmd(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rtsal", "batch", *argv]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# -- quick: inputs and manifest ---------------------------------------------------------------------------


def test_inputs_mirror_the_tree_skip_outdir_and_refuse_collisions(archive, tmp_path):
    out = archive / "out"
    clip(out / "old.mp4")  # an earlier run's output inside the input folder: never an input
    items = expand_inputs([str(archive)], out)
    assert [i.rel for i in items] == ["a", "b", "bad", "day2/c", "day2/d"]
    glob_items = expand_inputs([str(archive / "day2" / "*.m*")], out)
    assert [i.rel for i in glob_items] == ["c", "d"]
    clip(archive / "a.mkv")
    with pytest.raises(UsageError, match="would both write a.mp4"):
        expand_inputs([str(archive / "a.mp4"), str(archive / "a.mkv")], out)
    with pytest.raises(UsageError, match="does not exist"):
        expand_inputs([str(tmp_path / "nope.mp4")], out)


def test_manifest_ignores_a_torn_line_and_appends_on_a_fresh_one(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        m.append({"type": "file", "input": "/x/a.mp4", "status": "done"})
        with pytest.raises(UsageError, match="in use"):
            Manifest(path).open()  # a second run on the same folder is refused while the first writes
    with open(path, "ab") as f:
        f.write(b'{"type": "file", "input": "/x/b.mp4", "sta')  # killed mid-write
    state = read_manifest(path)
    assert list(state.files) == ["/x/a.mp4"] and state.torn == 1
    with Manifest(path) as m:
        m.append({"type": "file", "input": "/x/c.mp4", "status": "failed"})
    state = read_manifest(path)
    assert sorted(state.files) == ["/x/a.mp4", "/x/c.mp4"] and state.torn == 1


def test_resume_skips_only_unchanged_outputs_and_refuses_other_settings(archive, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    items = expand_inputs([str(archive / "a.mp4"), str(archive / "b.mkv")], out)
    (out / "a.mp4").write_bytes(b"video a")
    (out / "b.mp4").write_bytes(b"video b")
    settings = {"size": 32}
    with Manifest(out / "manifest.jsonl") as m:
        m.append({"type": "run", "settings": settings})
        for it in items:
            st = it.input.stat()
            rec = {
                "type": "file",
                "input": str(it.input),
                "status": "done",
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "outputs": {"video": f"{it.rel}.mp4"},
                "sha256": {"video": sha256_file(out / f"{it.rel}.mp4")},
                "settings_sha256": settings_sha256(settings),
            }
            m.append(rec)
    (out / "b.mp4").write_bytes(b"changed")  # its hash no longer matches: redo it
    state = read_manifest(out / "manifest.jsonl")

    def expected(it):
        return {"video": f"{it.rel}.mp4"}

    plan = plan_resume(items, state, settings, out, resume=None, force=False, expected_outputs=expected)
    assert [i.rel for i in plan.todo] == ["b"] and [i.rel for i, _ in plan.skip] == ["a"]
    with pytest.raises(UsageError, match="--size 32 there, 64 now"):
        plan_resume(items, state, {"size": 64}, out, resume=None, force=False, expected_outputs=expected)
    forced = plan_resume(items, state, {"size": 64}, out, resume=None, force=True, expected_outputs=expected)
    assert len(forced.todo) == 2 and not forced.skip


# -- the fallback without Dask (in this process) -----------------------------------------------------------


def test_without_dask_runs_in_process_and_says_how_to_get_workers(archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    out = tmp_path / "out"
    code = main(["batch", str(archive / "a.mp4"), str(archive / "bad.mp4"), "-o", str(out), *ENGINE])
    captured = capsys.readouterr()
    assert code == 1
    assert 'pip install "rtsal[dask]"' in captured.err
    assert decoded(out / "a.mp4") == (6, 1)
    recs = {Path(r["input"]).name: r for r in manifest_files(out)}
    assert recs["a.mp4"]["status"] == "done" and recs["a.mp4"]["frames"] == 6
    assert recs["bad.mp4"]["status"] == "failed" and "cannot open" in recs["bad.mp4"]["error"]
    assert not (out / "bad.mp4").exists() and not leftovers(out)
    assert "1 done, 1 failed" in captured.out


# -- real clusters ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_local_cluster_of_two_workers(archive, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        rtsal_cmd(str(archive), "-o", str(out), "--workers", "2", "--crf", "30", *ENGINE),
        env=env(),
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert r.returncode == 1, r.stderr  # the corrupt file failed, the others went on
    assert "2 worker process(es)" in r.stderr
    for i, rel in enumerate(["a", "b", "day2/c", "day2/d"]):
        assert decoded(out / f"{rel}.mp4") == (6 + i, 1)  # every frame, audio kept
        assert len((out / f"{rel}.csv").read_text().splitlines()) == 1 + 6 + i
    recs = manifest_files(out)
    assert sorted(r["rel"] for r in recs) == ["a", "b", "bad", "day2/c", "day2/d"]
    by = {r["rel"]: r for r in recs}
    assert by["bad"]["status"] == "failed" and by["bad"]["error"] and not (out / "bad.mp4").exists()
    for rel in ["a", "b", "day2/c", "day2/d"]:
        assert by[rel]["status"] == "done"
        assert by[rel]["sha256"]["video"] == sha256_file(out / f"{rel}.mp4")
    run = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert run["type"] == "run" and run["settings"]["size"] == 32 and run["torch"]
    assert len({r["weights_sha256"] for r in recs if r["status"] == "done"}) == 1
    assert "4 done, 1 failed" in r.stdout and not leftovers(out)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_killed_mid_file_is_replaced_and_the_file_done_once(tmp_path):
    import psutil

    src = tmp_path / "in"
    for i in range(2):
        clip(src / f"long{i}.mp4", frames=80, seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        rtsal_cmd(str(src), "-o", str(out), "--workers", "1", *ENGINE),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        victim = None
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and victim is None:
            busy = [p for p in out.glob(".long*.rtsal-*.tmp.mp4")] if out.exists() else []
            if busy:
                name = busy[0].name.split(".rtsal-")[0][1:]
                if not (out / f"{name}.mp4").exists():
                    workers = [
                        c
                        for c in psutil.Process(proc.pid).children(recursive=True)
                        if "spawn_main" in " ".join(c.cmdline())
                    ]
                    if workers:
                        workers[0].kill()
                        victim = (name, workers[0].pid)
                        assert not (out / f"{name}.mp4").exists()  # it was mid-file
            time.sleep(0.05)
        assert victim is not None, "no file started"
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        stop([proc])
    assert proc.returncode == 0, stderr
    recs = manifest_files(out)
    assert sorted(r["rel"] for r in recs) == ["long0", "long1"]  # each recorded once
    assert all(r["status"] == "done" for r in recs)
    retried = next(r for r in recs if r["rel"] == victim[0])
    assert retried["worker"].split(":")[1] != str(victim[1])  # done by the replacement worker
    assert decoded(out / f"{victim[0]}.mp4") == (80, 1) and not leftovers(out)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ctrl_c_then_resume_completes_without_redoing(tmp_path):
    src = tmp_path / "in"
    for i in range(4):
        clip(src / f"c{i}.mp4", frames=30, seed=i)
    out = tmp_path / "out"
    cmd = rtsal_cmd(str(src), "-o", str(out), "--workers", "1", *ENGINE)
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            if (out / "manifest.jsonl").exists() and manifest_files(out):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop([proc])
    assert proc.returncode == 130, stderr
    first = manifest_files(out)
    done = {r["rel"] for r in first if r["status"] == "done"}
    assert done and len(done) == len(first) < 4  # recorded once each; not everything ran
    # nothing half-written: a final output exists only for a recorded file
    assert {p.stem for p in out.glob("*.mp4")} == done and not leftovers(out)

    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=220)
    assert r.returncode == 0, r.stderr
    second = manifest_files(out)[len(first) :]
    assert {x["rel"] for x in second if x["status"] == "skipped"} == done  # nothing redone
    assert {x["rel"] for x in second if x["status"] == "done"} == {f"c{i}" for i in range(4)} - done
    for i in range(4):
        assert decoded(out / f"c{i}.mp4") == (30, 1)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"c{i}{s}" for i in range(4) for s in (".mp4", ".csv")] + ["manifest.jsonl"]
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_existing_scheduler_with_two_dask_workers(archive, tmp_path):
    dask = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(info),
                ],
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        "--scheduler-file",
                        str(info),
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--no-nanny",
                    ],
                    env=env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        out = tmp_path / "out"
        files = [str(archive / "a.mp4"), str(archive / "b.mkv"), str(archive / "day2")]
        r = subprocess.run(
            rtsal_cmd(*files, "-o", str(out), "--scheduler", address, "--threads", "1", *ENGINE),
            env=env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        stop(procs)
    assert r.returncode == 0, r.stderr
    assert f"Dask scheduler {address}" in r.stderr
    recs = manifest_files(out)
    assert sorted(x["rel"] for x in recs) == ["a", "b", "c", "d"] and all(x["status"] == "done" for x in recs)
    assert decoded(out / "c.mp4") == (8, 1)
    assert len({x["worker"] for x in recs}) >= 1
