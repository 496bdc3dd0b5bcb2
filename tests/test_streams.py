"""Inference streams: order, freshness, errors, options, thread lifetime (real threads, tiny frames)."""

from __future__ import annotations

import random
import sys
import threading
import time

import numpy as np
import pytest

from rtsal.errors import UsageError
from rtsal.pipeline import PipelineMonitor, run_pipeline
from rtsal.streams import AUTO_RULE, plan_streams
from rtsal.types import Frame


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rtsal-")]


def frames(n: int, period: float = 0.0):
    for i in range(n):
        if period:
            time.sleep(period)
        yield Frame(i, i / 30.0, time.perf_counter(), np.full((4, 4, 3), i % 256, np.uint8))


class RandomDelayInfer:
    """Each frame takes a random 0..3 ms; records which threads ran it (so the test sees real concurrency)."""

    def __init__(self, seed: int, max_s: float = 0.003) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.max_s = max_s
        self.threads: set[str] = set()
        self.active = 0
        self.max_active = 0

    def __call__(self, batch):
        with self.lock:
            delay = self.rng.random() * self.max_s
            self.threads.add(threading.current_thread().name)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(delay)
            return [(f.index, int(f.image[0, 0, 0])) for f in batch]
        finally:
            with self.lock:
                self.active -= 1


@pytest.mark.parametrize(("streams", "batch"), [(2, 1), (4, 1), (3, 2)])
def test_file_mode_keeps_every_frame_in_order(streams, batch):
    infer = RandomDelayInfer(seed=streams * 10 + batch)
    seen = []
    stats = run_pipeline(frames(120), infer, lambda f, r: seen.append((f.index, r)), live=False,
                         streams=streams, batch=batch, queue_size=2)
    assert [i for i, _ in seen] == list(range(120))
    assert all(r == (i, i % 256) for i, r in seen)  # each result drawn with its own frame
    assert (stats.captured, stats.processed, stats.rendered, stats.dropped) == (120, 120, 120, 0)
    assert stats.streams == streams
    assert len(infer.threads) > 1 and infer.max_active > 1  # the streams really ran side by side
    assert set(stats.cpu_ms) >= {"capture", "infer", "render"}
    assert not pipeline_threads()


def test_file_mode_slow_stream_bounds_frames_in_flight():
    """One stream stuck on a frame: the others go on, but capture stops at the in-flight bound."""
    release = threading.Event()
    captured_when_stuck = []

    def infer(batch):
        if batch[0].index == 0:
            release.wait(5)
        return [f.index for f in batch]

    monitor = PipelineMonitor()

    def watch():
        time.sleep(0.3)
        captured_when_stuck.append(monitor.snapshot()["captured"])
        release.set()

    threading.Thread(target=watch, daemon=True).start()
    seen = []
    run_pipeline(frames(500), infer, lambda f, r: seen.append(r), live=False, streams=3, queue_size=2,
                 monitor=monitor)
    assert seen == list(range(500))
    assert captured_when_stuck[0] < 30  # bounded (2 * queue + 2 * streams * batch = 10), not all 500


@pytest.mark.parametrize("streams", [2, 3])
def test_live_mode_never_shows_an_older_frame_after_a_newer_one(streams):
    infer = RandomDelayInfer(seed=streams, max_s=0.02)  # streams finish out of order
    shown = []
    stats = run_pipeline(frames(200, period=0.002), infer, lambda f, r: shown.append(f.index), live=True,
                         streams=streams)
    assert shown and all(a < b for a, b in zip(shown, shown[1:], strict=False))
    assert stats.dropped == stats.captured - stats.rendered  # every frame not shown is counted
    assert stats.dropped > 0 and stats.rendered < 200
    assert infer.max_active > 1
    assert not pipeline_threads()


@pytest.mark.parametrize("live", [False, True])
def test_a_stream_that_raises_stops_the_run(live):
    calls = []

    def infer(batch):
        calls.append(batch[0].index)
        if len(calls) == 7:
            raise RuntimeError("stream failed")
        time.sleep(0.001)
        return [f.index for f in batch]

    with pytest.raises(RuntimeError, match="stream failed") as info:
        run_pipeline(frames(100_000, period=0.0005), infer, lambda f, r: None, live=live, streams=3)
    assert info.value.stage == "infer"
    assert len(calls) < 1000  # stopped, not run to the end
    assert not pipeline_threads()


def tiny_explainer():
    """A small seeded CNN with three scales and a linear head (the closed-form CAM), at 32x32."""
    import torch
    from torch import nn

    from rtsal.engine.explainer import Explainer

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU())

    torch.manual_seed(0)
    model = nn.Sequential(block(3, 8), block(8, 16), block(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10)).eval()
    return Explainer(model, size=32, class_names=[f"c{i}" for i in range(10)])


def run_two(work) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def target(k: int) -> None:
        barrier.wait()
        try:
            work(k)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    ts = [threading.Thread(target=target, args=(k,)) for k in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return errors


def test_engine_streams_share_one_model_and_each_gets_its_own_maps():
    """Two threads explaining different images on one Explainer at once get the same maps as one at a
    time (the hooks record per thread)."""
    import torch

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    with tiny_explainer() as e:
        alone = [e.explain(img, size="model").saliency for img in images]
        out: dict[int, list] = {0: [], 1: []}

        def work(k: int) -> None:
            for _ in range(3):
                for j in range(k, len(images), 2):
                    out[k].append((j, e.explain(images[j], size="model").saliency))

        assert not run_two(work)
    for k in (0, 1):
        assert len(out[k]) == 6
        for j, sal in out[k]:
            torch.testing.assert_close(sal, alone[j])


def test_frame_explainer_runs_a_comparison_method_alone():
    """A comparison method takes the engine's hooks off the shared model; an engine call in another stream
    at the same time must wait for it rather than fail."""
    from rtsal.frame.infer import FrameExplainer
    from rtsal.methods import build_runner

    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    e = tiny_explainer()
    with FrameExplainer(build_runner("fastcam", e, close_explainer=True), "fastcam") as fx:
        fx.set_method("gradcam-full")
        fx.set_method("fastcam")

        def work(k: int) -> None:
            for _ in range(6):
                r = fx.explain(image, "fastcam" if k == 0 else "gradcam-full")
                assert r.saliency.shape[-2:] == (32, 32)

        errors = run_two(work)
    assert not errors, errors


def test_plan_streams_rule_and_validation():
    assert plan_streams("auto", None, cores=1) == (1, 1)
    assert plan_streams("auto", None, cores=2) == (2, 1)
    assert plan_streams("auto", None, cores=8) == (4, 2)
    assert plan_streams("auto", None, cores=16) == (4, 4)
    assert plan_streams("3", None, cores=8) == (3, 2)
    assert plan_streams("auto", 1, cores=4) == (4, 1)
    assert plan_streams(1, 2, cores=2) == (1, 2)
    assert [t for _, t in AUTO_RULE] == sorted(t for _, t in AUTO_RULE)
    for streams, threads in (("0", None), ("x", None), ("65", None), ("2.5", None), ("auto", 0), (1, 1000)):
        with pytest.raises(UsageError):
            plan_streams(streams, threads, cores=2)


@pytest.mark.parametrize("opts", [["--streams", "0"], ["--streams", "many"], ["--threads", "0"],
                                  ["--threads", "-2"]])
@pytest.mark.parametrize("command", [["webcam", "--no-window", "--source", "nosuch.mp4"],
                                     ["video", "nosuch.mp4", "-o", "out.mp4"],
                                     ["demo", "--no-window"]])
def test_cli_streams_and_threads_validation_exit_2_one_line(command, opts, tmp_path, monkeypatch, capsys):
    from rtsal.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*command, *opts]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("--streams" in err[0] or "--threads" in err[0]), err
    assert not list(tmp_path.iterdir())  # nothing opened or written


def test_no_thread_alive_after_stop_and_error():
    before = set(threading.enumerate())
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    run_pipeline(frames(1_000_000, period=0.0005), lambda fs: [0] * len(fs), lambda f, r: None, live=True,
                 streams=4, stop=stop)
    with pytest.raises(ValueError):
        run_pipeline(frames(10), lambda fs: [], lambda f, r: None, live=False, streams=4)
    time.sleep(0.1)  # the Timer thread ends just after firing
    assert not pipeline_threads()
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_bad_streams_argument():
    with pytest.raises(ValueError, match="streams"):
        run_pipeline(frames(1), lambda fs: fs, lambda f, r: None, live=False, streams=0)


def test_openmp_default_only_for_the_command_line(monkeypatch):
    """``rtsal``'s entry sets OMP_WAIT_POLICY=PASSIVE before torch loads; a user's value, a process where
    torch is already loaded (a library user) and ``rtsal.cli.main`` are left alone."""
    import os

    from rtsal import streams

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    streams.set_cli_openmp_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    streams.set_cli_openmp_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setitem(sys.modules, "torch", object())
    streams.set_cli_openmp_defaults()
    assert "OMP_WAIT_POLICY" not in os.environ
    import inspect

    from rtsal import cli

    assert "set_cli_openmp_defaults" in inspect.getsource(cli.entry)
    assert "set_cli_openmp_defaults" not in inspect.getsource(cli.main)


def test_frame_explainer_on_three_streams_gives_each_frame_its_own_result():
    """The real infer stage (FrameExplainer over one shared Explainer) on 3 streams, file mode: every frame
    comes back in order with the maps and classes it gets when explained alone."""
    import torch

    from rtsal.frame.infer import FrameExplainer
    from rtsal.methods import build_runner

    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(12)]
    with FrameExplainer(build_runner("fastcam", tiny_explainer(), close_explainer=True), "fastcam") as fx:
        alone = [fx.explain(img).saliency[0] for img in images]
        got = []

        def source():
            for i, img in enumerate(images):
                yield Frame(i, i / 30.0, time.perf_counter(), img)

        run_pipeline(source(), fx, lambda f, r: got.append((f.index, r.result.saliency[r.i], r.batch)),
                     live=False, streams=3, batch=2)
    assert [i for i, _, _ in got] == list(range(12))
    for i, sal, _ in got:  # batches of 2 round differently from one image: 1e-3, far below a wrong frame's
        torch.testing.assert_close(sal, alone[i], atol=1e-3, rtol=1e-3)
    assert min((alone[i] - alone[i + 1]).abs().max().item() for i in range(11)) > 1e-2
    assert not pipeline_threads()
