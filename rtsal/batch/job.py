"""One ``rtsal batch`` run: expand the inputs, plan against the manifest, run the files, record, report.

The client process alone writes the manifest, one line per file as its task completes, so a file that a
replaced worker ran again is recorded once. At most as many files are in flight as the cluster has worker
threads, so that a Ctrl-C can stop the submission and let exactly the running files finish (they are
recorded); a second Ctrl-C abandons them (a local cluster's workers are stopped, their temporary files
removed: no final path is touched). The exit code is 130 after Ctrl-C, else 1 if any file failed, else 0.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rtsal import __version__
from rtsal.batch.cluster import BatchCluster
from rtsal.batch.inputs import BatchItem, declared_frames, expand_inputs
from rtsal.batch.manifest import (
    MANIFEST_NAME,
    Manifest,
    plan_resume,
    read_manifest,
    settings_sha256,
    sha256_file,
)
from rtsal.batch.progress import BatchProgress
from rtsal.batch.report import BatchReport
from rtsal.batch.worker import PROGRESS_TOPIC, EngineBuilder, FileTask, run_file
from rtsal.errors import UsageError, VideoIOError
from rtsal.frame.video_job import VideoSettings
from rtsal.interrupts import Interrupts
from rtsal.outputs import same_file

__all__ = ["INDEX_NAME", "BatchOptions", "run_batch", "write_review_index"]

INDEX_NAME = "index.html"  # --report: a row per video, linking its page


@dataclass(frozen=True)
class BatchOptions:
    """Everything a batch run needs besides the per-file pipeline.

    ``engine`` are the options the engine builder takes (``model``, ``weights``, ``method``, ...), ``video``
    how each file is drawn and encoded; both are recorded in the manifest and compared on resume.
    """

    inputs: list[str]
    outdir: Path
    engine: dict[str, Any]
    video: VideoSettings
    maps: bool = False
    report: bool = False  # a review page per file (<path>.html) and OUTDIR/index.html
    resume: bool | None = None
    force: bool = False
    workers: int | None = None
    threads_per_worker: int | None = None
    torch_threads: int | None = None
    scheduler: str | None = None
    quiet: bool = False
    bars: bool | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _weights_record(weights: str) -> dict[str, Any]:
    if weights.lower() in ("default", "none"):
        return {"weights": weights.lower()}
    path = Path(weights)
    try:
        return {"weights": str(path.resolve()), "weights_file_sha256": sha256_file(path)}
    except OSError as exc:
        raise UsageError(f"--weights {weights}: cannot read it ({exc.strerror or exc})") from None


def _prepare_outdir(outdir: Path) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise VideoIOError(f"-o {outdir} exists and is not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VideoIOError(f"cannot create the output folder {outdir}: {exc.strerror or exc}") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise VideoIOError(f"output folder {outdir} is not writable")


def _remove_temporaries(paths: list[Path]) -> int:
    """Remove what killed or abandoned tasks left beside these outputs (AtomicPath and maps temporaries)."""
    removed = 0
    folders = set()
    for p in paths:
        folders.add(p.parent)
        stem, suffix = glob.escape(p.stem), glob.escape(p.suffix)
        # ours (AtomicPath of the final path) and the VideoJob's own beside it
        for pattern in (f".{stem}.rtsal-*.tmp{suffix}", f"..{stem}.rtsal-*.tmp.rtsal-*.tmp{suffix}"):
            for tmp in p.parent.glob(pattern):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed += 1
    for folder in folders:
        for tmp in folder.glob(".rtsal-maps-*"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


class _Run:
    def __init__(self, opts: BatchOptions, build: EngineBuilder, log: Callable[[str], None]) -> None:
        self.opts = opts
        self.build = build
        self.log = log
        self.outdir = opts.outdir.resolve()
        self.suffixes = {
            "video": ".mp4",
            "csv": ".csv",
            **({"maps": ".npz"} if opts.maps else {}),
            **({"report": ".html"} if opts.report else {}),
        }
        video = {k: v for k, v in asdict(opts.video).items() if k != "progress"}
        engine = {k: v for k, v in opts.engine.items() if k != "threads"}
        self.settings = {**engine, **video, "maps": opts.maps}  # what changes an output
        if opts.report:
            self.settings["report"] = True
        self.settings_hash = settings_sha256(self.settings)
        self.torch_threads: int | None = opts.torch_threads
        self.by_key: dict[int, BatchItem] = {}

    def rel_outputs(self, item: BatchItem) -> dict[str, str]:
        return {kind: f"{item.rel}{suffix}" for kind, suffix in self.suffixes.items()}

    def task(self, item: BatchItem) -> FileTask:
        rel = self.rel_outputs(item)
        return FileTask(
            input=str(item.input),
            outputs={k: str(self.outdir / v) for k, v in rel.items()},
            engine={**self.opts.engine, "threads": self.torch_threads},
            video=replace(self.opts.video, progress=False),
            settings_sha256=self.settings_hash,
            rel=rel,
        )

    def file_record(
        self, item: BatchItem, result: dict[str, Any], stat: os.stat_result | None
    ) -> dict[str, Any]:
        status = result.get("status", "failed")
        return {
            "type": "file",
            "time": _now(),
            "input": str(item.input),
            "rel": item.rel,
            "size": stat.st_size if stat else None,
            "mtime": stat.st_mtime if stat else None,
            "mtime_ns": stat.st_mtime_ns if stat else None,
            "status": status,
            "outputs": result.get("outputs") if status == "done" else {},
            "sha256": result.get("sha256") if status == "done" else {},
            "frames": result.get("frames", 0),
            "seconds": result.get("seconds", 0.0),
            "fps": result.get("fps", 0.0),
            "error": result.get("error"),
            "worker": result.get("worker"),
            "engine_seconds": result.get("engine_seconds"),
            "weights_sha256": result.get("weights_sha256"),
            "settings_sha256": self.settings_hash,
            **({"review": result.get("review")} if self.opts.report else {}),
        }

    def run(self) -> BatchReport:
        opts = self.opts
        _prepare_outdir(self.outdir)
        items = expand_inputs(opts.inputs, self.outdir)
        for item in items:
            for rel in self.rel_outputs(item).values():
                out = self.outdir / rel
                if out.exists() and same_file(out, item.input):
                    raise UsageError(f"output {out} is the input file {item.input}; choose another -o")
                if opts.report and rel == INDEX_NAME:
                    raise UsageError(f"{item.input}: its review page would be the index page {out}")
        report = BatchReport()
        t0 = time.perf_counter()
        with Manifest(self.outdir / MANIFEST_NAME) as manifest:
            state = read_manifest(manifest.path)
            if state.torn:
                self.log(f"{manifest.path}: ignored {state.torn} unreadable line(s) (a run that was killed)")
            plan = plan_resume(
                items,
                state,
                self.settings,
                self.outdir,
                resume=opts.resume,
                force=opts.force,
                expected_outputs=self.rel_outputs,
            )
            all_outputs = [self.outdir / r for it in items for r in self.rel_outputs(it).values()]
            _remove_temporaries(
                all_outputs
            )  # leftovers of a killed run: we hold the lock, nobody else writes
            manifest.append(
                {
                    "type": "run",
                    "time": _now(),
                    "rtsal": __version__,
                    "torch": _version("torch"),
                    "dask": _version("distributed"),
                    "model": self.settings.get("model"),
                    **_weights_record(str(self.settings.get("weights", "default"))),
                    "settings": self.settings,
                    "settings_sha256": self.settings_hash,
                    "inputs": len(items),
                    "to_run": len(plan.todo),
                    "resumed": plan.resumed,
                    "force": opts.force,
                }
            )
            for _item, old in plan.skip:
                rec = {**old, "type": "file", "time": _now(), "status": "skipped", "seconds": 0.0, "fps": 0.0}
                manifest.append(rec)
                report.rows.append(rec)
            if plan.resumed:
                self.log(
                    f"resuming: {len(plan.skip)} file(s) done before are skipped, {len(plan.todo)} to run"
                )
            try:
                self._execute(plan.todo, manifest, report)
            finally:
                _remove_temporaries(all_outputs)
                if opts.report:
                    write_review_index(self.outdir / INDEX_NAME, report.rows)
        report.wall = time.perf_counter() - t0
        return report

    def _execute(self, todo: list[BatchItem], manifest: Manifest, report: BatchReport) -> None:
        opts = self.opts
        if not todo:
            report.mode = "nothing to run"
            return
        stats = {}
        for item in todo:
            try:
                stats[item.input] = item.input.stat()
            except OSError:
                stats[item.input] = None
        frames = [declared_frames(it.input) for it in todo]
        total_frames = sum(f for f in frames if f) or None
        pending = deque(enumerate(todo))
        by_key = self.by_key = dict(enumerate(todo))

        with (
            BatchCluster(
                opts.workers, opts.threads_per_worker, opts.torch_threads, opts.scheduler, log=self.log
            ) as cluster,
            BatchProgress(len(todo), total_frames, quiet=opts.quiet, bars=opts.bars) as bar,
        ):
            report.mode = cluster.mode
            if cluster.mode == "local":
                self.torch_threads = cluster.choice.torch_threads
            if cluster.client is not None:
                ex = cluster.executor(run_file, self.build)
                cluster.client.subscribe_topic(
                    PROGRESS_TOPIC, lambda event: bar.frames(event[1]["input"], event[1]["frames"])
                )
            else:
                ex = cluster.executor(run_file, self.build, bar.frames)

            def record(key: int, result: dict[str, Any]) -> None:
                item = by_key[key]
                rec = self.file_record(item, result, stats[item.input])
                manifest.append(rec)
                report.rows.append(rec)
                bar.file_done(rec, item.rel)

            with Interrupts() as signals:
                try:
                    while pending or ex.in_flight:
                        while pending and len(ex.in_flight) < ex.slots:
                            key, item = pending.popleft()
                            ex.submit(key, self.task(item))
                        record(*ex.next_done())
                except KeyboardInterrupt:
                    report.interrupted = True
                    report.not_started = len(pending)
                    pending.clear()
                    self._finish_running(ex, record, report, bar)
            if signals.signum is not None:
                report.interrupted = True
            ex.close()

    def _finish_running(
        self, ex: Any, record: Callable[..., None], report: BatchReport, bar: BatchProgress
    ) -> None:
        running = ex.in_flight
        if ex.mode == "in-process" or not running:
            report.abandoned = [self.by_key[k].rel for k in running]
            ex.abandon()
            return
        bar.note(
            f"interrupted: no new file; letting {len(running)} running file(s) finish "
            "(Ctrl-C again to abandon them)"
        )
        try:
            while ex.in_flight:
                record(*ex.next_done())
        except KeyboardInterrupt:
            report.abandoned = [self.by_key[k].rel for k in ex.in_flight]
            ex.abandon()
            bar.note(f"abandoned {len(report.abandoned)} running file(s); their outputs were not touched")


def write_review_index(path: Path, rows: list[dict[str, Any]]) -> Path:
    """The index page of ``--report``: one row per file of this run (done, skipped or failed)."""
    from rtsal.report.page import write_index

    entries = []
    for rec in rows:
        page = (rec.get("outputs") or {}).get("report")
        entries.append(
            {
                "name": rec.get("rel") or rec.get("input"),
                "status": rec.get("status"),
                "page": page if page and (path.parent / page).exists() else None,
                "summary": rec.get("review"),
                "error": rec.get("error"),
            }
        )
    return write_index(path, entries)


def run_batch(
    opts: BatchOptions, build: EngineBuilder, log: Callable[[str], None] | None = None
) -> BatchReport:
    """Run a batch; returns its report (``report.exit_code`` is the command's exit status)."""
    if log is None:
        import sys

        def log(text: str) -> None:
            print(text, file=sys.stderr, flush=True)

    return _Run(opts, build, log).run()
