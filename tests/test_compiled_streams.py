"""Inference streams on the compiled engine, and a build that outlives its run.

- :class:`rtsal.locks.SharedExclusiveLock` (torch-free, fast): shared holders together, an exclusive one
  alone.
- The cache's per-key build lock (torch-free): a second builder waits and reuses the first one's entry.
- One real child build of a seeded ResNet-18 (64x64) per module, started by a run that closes before it is
  done: the child finishes in the background, writes a valid entry, and the next explainer loads it. That
  explainer then serves two threads at once with the same results as serial calls. ``slow`` (a real build).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rtsal.engine.cache import Cache, spec_key
from rtsal.locks import SharedExclusiveLock

SIZE = (64, 64)


# -- the readers-writer lock ---------------------------------------------------------------------------------
def test_shared_holders_are_inside_together_and_exclusive_waits_for_them():
    lock = SharedExclusiveLock()
    both_in = threading.Barrier(3, timeout=10)
    release = threading.Event()
    order: list[str] = []

    def shared() -> None:
        with lock.hold():
            both_in.wait()  # only passes when both shared holders are inside at the same time
            release.wait(10)
            order.append("shared out")

    def exclusive() -> None:
        with lock.hold(exclusive=True):
            order.append("exclusive in")

    ts = [threading.Thread(target=shared) for _ in range(2)]
    for t in ts:
        t.start()
    both_in.wait()
    assert lock.shared_holders == 2
    ex = threading.Thread(target=exclusive)
    ex.start()
    ex.join(0.2)
    assert ex.is_alive() and order == []  # waits for the shared holders
    release.set()
    for t in [*ts, ex]:
        t.join(10)
    assert order == ["shared out", "shared out", "exclusive in"]


def test_shared_waits_while_exclusive_holds_or_waits():
    lock = SharedExclusiveLock()
    inside = threading.Event()
    release = threading.Event()
    got: list[str] = []

    def exclusive() -> None:
        with lock.hold(exclusive=True):
            inside.set()
            release.wait(10)
            got.append("exclusive")

    def shared() -> None:
        with lock.hold():
            got.append("shared")

    e = threading.Thread(target=exclusive)
    e.start()
    assert inside.wait(10)
    s = threading.Thread(target=shared)
    s.start()
    s.join(0.2)
    assert s.is_alive() and got == []
    release.set()
    for t in (e, s):
        t.join(10)
    assert got == ["exclusive", "shared"]


# -- one build per key across processes ----------------------------------------------------------------------
def test_second_builder_waits_for_the_first_and_reuses_its_entry(tmp_path):
    """Another process holds the key's build lock and writes the entry slowly; ``store`` here waits and
    returns
    that entry without building (its write function must not run)."""
    cache = Cache(tmp_path / "cache")
    spec = {"format": 0, "model": "test", "shape": [1, 3, 8, 8]}
    started = tmp_path / "started"
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from rtsal.engine.cache import Cache
        def write(tmp):
            Path({str(started)!r}).write_text("x")
            time.sleep(1.0)
            tmp.write_bytes(b"package bytes")
        Cache({str(tmp_path / "cache")!r}).store({spec!r}, write)
    """)
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert child.poll() is None, "the first builder failed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert cache.building(spec_key(spec))

        def must_not_build(tmp: Path) -> None:
            raise AssertionError("built the same key twice")

        package = cache.store(spec, must_not_build)
        assert package.read_bytes() == b"package bytes"
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not cache.building(spec_key(spec))
    assert cache.lookup(spec) == package
    assert sorted(p.suffix for p in cache.root.iterdir()) == [".json", ".pt2"]  # the lock file is gone


# -- real builds ---------------------------------------------------------------------------------------------
def _explainer(cache_dir: Path, compile):
    import torch

    from rtsal.engine.explainer import Explainer

    torch.manual_seed(0)  # the same random weights every time: the same cache key
    return Explainer("resnet18", weights=None, size=SIZE, compile=compile, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rtsal-cstreams") / "cache"


@pytest.fixture(scope="module")
def detached(cache_dir):
    """A background run closed while its child build runs: (its stderr, the detached child, the key)."""
    import contextlib
    import io

    ex = _explainer(cache_dir, "background")
    procs = ex._compiled.context.procs
    try:
        image = np.zeros((*SIZE, 3), np.uint8)
        assert ex.explain(image, size="model").engine == "eager (compiling)"
        deadline = time.monotonic() + 30
        while not procs:
            assert time.monotonic() < deadline, "no child build started"
            time.sleep(0.05)
        assert procs[0].poll() is None, "the child ended before the run closed"
        from rtsal.engine.backends.compiled import cache_key

        key = spec_key(cache_key(ex.spec.for_input((1, 3, *SIZE))))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            ex.close()
        yield err.getvalue(), list(ex._compiled.detached), key
    finally:
        for p in procs:  # never leave a process behind
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_a_run_shorter_than_the_build_leaves_it_to_finish_and_the_next_run_is_compiled(detached, cache_dir):
    err, procs, key = detached
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "still building" in lines[0] and "next run" in lines[0]
    assert len(procs) == 1
    assert procs[0].wait(120) == 0  # the detached child finished the entry
    record = json.loads((cache_dir / f"{key}.json").read_text())
    assert record["spec"]["model"] == "resnet18"
    # built in a 1-thread child, its generated kernels still size their OpenMP team by the calling thread
    with zipfile.ZipFile(cache_dir / f"{key}.pt2") as z:
        kernels = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".cpp"))
    assert "#pragma omp parallel" in kernels and "num_threads(" not in kernels
    assert not list(cache_dir.glob("*.tmp")) and not list(cache_dir.glob(".*tmp"))
    ex = _explainer(cache_dir, True)
    try:
        r = ex.explain(np.zeros((*SIZE, 3), np.uint8), size="model")
        assert r.engine == "compiled"
        assert ex._compiled.source[(1, 3, *SIZE)] == "cache"
    finally:
        ex.close()


@pytest.mark.slow
def test_two_threads_on_one_compiled_explainer_match_serial_calls(detached, cache_dir):
    import torch

    from rtsal.engine.graph import ParallelRunner

    detached[1][0].wait(120)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(4)]
    ex = _explainer(cache_dir, True)
    try:
        serial = [ex.explain(img, size="model") for img in images]
        assert all(r.engine == "compiled" for r in serial)
        run = ex._compiled._built[(1, 3, *SIZE)]  # the CompiledBackend
        assert isinstance(run.runner, ParallelRunner) and run.runner.runners >= 2
        out: dict[int, list] = {0: [], 1: []}
        errors: list[BaseException] = []
        start = threading.Barrier(2, timeout=10)

        def work(k: int) -> None:
            try:
                torch.set_num_threads(1)
                start.wait()
                for _ in range(3):
                    for j in range(len(images)):
                        out[k].append((j, ex.explain(images[(j + k) % 4], size="model"), (j + k) % 4))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        ts = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in ts)
        for k in (0, 1):
            assert len(out[k]) == 12
            for _, r, i in out[k]:
                assert r.engine == "compiled"
                torch.testing.assert_close(r.saliency, serial[i].saliency)
                torch.testing.assert_close(r.logits, serial[i].logits)
                assert r.topk.indices.tolist() == serial[i].topk.indices.tolist()
        # both threads inside the graph at once (the GIL is released during the call): seen by the runner's
        # own counter; more calls until it is seen, in case the scheduler kept the two apart so far
        x = ex.preprocess(images[0])
        tgt = torch.full((1,), -1, dtype=torch.long)

        def more() -> None:
            torch.set_num_threads(1)
            for _ in range(100):
                if run.runner.peak >= 2:
                    return
                run.run(x, tgt)

        if run.runner.peak < 2:
            ts = [threading.Thread(target=more) for _ in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(120)
        assert run.runner.peak >= 2
    finally:
        ex.close()
    with pytest.raises(RuntimeError, match="closed"):
        run.run(torch.zeros(1, 3, *SIZE), torch.full((1,), -1, dtype=torch.long))


@pytest.mark.slow
def test_bench_gives_compiled_rows_next_to_the_eager_ones(detached, cache_dir, tmp_path, capsys, monkeypatch):
    """``rtsal bench --compile``: rows ``fastcam (compiled)`` and ``smoe (compiled)`` on the same (seeded,
    random) weights, timed after the graph is loaded (here from the module's cache entry), the build/load time
    in a note and the JSON."""
    import torch

    from rtsal.cli import main

    detached[1][0].wait(120)
    monkeypatch.setenv("RTSAL_CACHE_DIR", str(cache_dir))
    out = tmp_path / "bench.json"
    torch.manual_seed(0)  # the explainer bench builds first gets the module's weights: its cache entry
    rc = main(["bench", "--model", "resnet18", "--weights", "none", "--size", str(SIZE[0]), "--compile",
               "--no-peers", "--only", "fastcam,smoe", "--iters", "2", "--warmup", "0", "--budget", "2",
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    methods = [r["method"] for r in data["rows"]]
    assert methods == ["fastcam", "smoe", "fastcam (compiled)", "smoe (compiled)"]
    assert all(r["library"] == "rtsal" and r["median_ms"] > 0 for r in data["rows"])
    assert "fastcam (compiled)" in text and "compiled graph loaded from the cache" in text
    assert any("compiled graph" in n for n in data["environment"]["notes"])
    assert data["settings"]["compile"] is True
