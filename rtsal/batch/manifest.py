"""``OUTDIR/manifest.jsonl``: what a batch run did, one JSON line per event, and what a resumed run may skip.

Two kinds of line (``"type"``):

- ``run``, once per run: rtsal and torch versions, the model, the weights (name or file and its SHA-256) and
  every setting that changes an output, with the SHA-256 of those settings.
- ``file``, once per file as it finishes: input path, size and modification time, output paths (relative to
  OUTDIR), ``status`` (``done`` / ``failed`` / ``skipped``), frames, seconds, frames/s, the one-line error of
  a failure, the SHA-256 of each output, the worker that ran it and the SHA-256 of the weights it loaded.

Only the client process writes it, on task completion, so a file a worker retried is counted once. Every
line is appended with one ``os.write`` of the whole line on an ``O_APPEND`` descriptor followed by
``fsync``: a killed process leaves at most one torn last line, which :func:`read_manifest` ignores (and the
next append starts on a fresh line). An exclusive ``flock`` keeps two runs from writing one manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtsal.errors import UsageError, VideoIOError
from rtsal.outputs import sha256_file

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ManifestState",
    "Plan",
    "plan_resume",
    "read_manifest",
    "settings_sha256",
    "sha256_file",
]

MANIFEST_NAME = "manifest.jsonl"
COMPLETE = ("done", "skipped")  # a skipped line carries the hashes of the done line it stands for


def settings_sha256(settings: dict[str, Any]) -> str:
    """Hex SHA-256 of the settings as canonical JSON (sorted keys)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ManifestState:
    """What a manifest holds: the run lines in order, the last file line per input, unreadable lines."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: int = 0
    torn: int = 0

    @property
    def settings(self) -> dict[str, Any] | None:
        """The settings of the latest run, or None."""
        return self.runs[-1].get("settings") if self.runs else None


def read_manifest(path: str | os.PathLike) -> ManifestState:
    """Parse a manifest; a missing file is an empty state. Lines that do not parse (a torn last line after a
    kill) are counted in ``torn`` and otherwise ignored."""
    state = ManifestState()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return state
    except OSError as exc:
        raise VideoIOError(f"cannot read {path}: {exc.strerror or exc}") from None
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            state.torn += 1
            continue
        if not isinstance(rec, dict):
            state.torn += 1
            continue
        state.lines += 1
        if rec.get("type") == "run":
            state.runs.append(rec)
        elif rec.get("type") == "file" and isinstance(rec.get("input"), str):
            state.files[rec["input"]] = rec
    return state


class Manifest:
    """The append side of a manifest (context manager; holds an exclusive lock while open)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> Manifest:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644
            )
        except OSError as exc:
            raise VideoIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError(
                f"{self.path} is in use by another rtsal batch run; wait for it or choose another -o"
            ) from None
        self._fd = fd
        size = os.fstat(fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a torn line from a killed run: start the next one on a new line
                    self._write(b"\n")

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            n = os.write(self._fd, data)
            if n != len(data):
                raise OSError(28, f"short write ({n} of {len(data)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            raise VideoIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line, atomically (one write of the whole line, then fsync)."""
        if self._fd is None:
            raise RuntimeError("this Manifest is not open")
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
        self._write(line.encode("utf-8"))

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # releases the lock
            self._fd = None


def settings_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """``--size 64 there, 32 now; ...`` for the first ``limit`` settings that differ."""
    keys = sorted(set(old) | set(new))
    parts = []
    for k in keys:
        if old.get(k) != new.get(k):
            flag = "--" + k.replace("_", "-")
            parts.append(f"{flag} {old.get(k)!s} there, {new.get(k)!s} now")
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


@dataclass(frozen=True)
class Plan:
    """Which inputs to run and which to skip (with the manifest line that makes them complete)."""

    todo: list[Any]
    skip: list[tuple[Any, dict[str, Any]]]
    resumed: bool


def _still_complete(rec: dict[str, Any], input_path: Path, outdir: Path, settings_hash: str) -> bool:
    if rec.get("status") not in COMPLETE or rec.get("settings_sha256") != settings_hash:
        return False
    try:
        st = input_path.stat()
    except OSError:
        return False
    if rec.get("size") != st.st_size or rec.get("mtime_ns") != st.st_mtime_ns:
        return False
    hashes = rec.get("sha256") or {}
    outputs = rec.get("outputs") or {}
    if not outputs or set(hashes) != set(outputs):
        return False
    for kind, rel in outputs.items():
        try:
            if sha256_file(outdir / rel) != hashes[kind]:
                return False
        except OSError:
            return False
    return True


def plan_resume(
    items: Iterable[Any],
    state: ManifestState,
    settings: dict[str, Any],
    outdir: Path,
    *,
    resume: bool | None,
    force: bool,
    expected_outputs: Any,
) -> Plan:
    """Decide what a run does, given the manifest already in ``outdir``.

    ``resume`` None means: resume when the manifest has files and its settings equal ``settings``.
    Different settings are refused (:class:`UsageError`, one line) unless ``force`` (then every file is
    redone). A file is skipped when its last line is complete, made with these settings, its input has the
    recorded size and mtime, and every output still has its recorded SHA-256 and is the output this run
    would write (``expected_outputs(item) -> {kind: rel}``).
    """
    items = list(items)
    old = state.settings
    new_hash = settings_sha256(settings)
    if old is not None and state.files and settings_sha256(old) != new_hash and not force:
        raise UsageError(
            f"{outdir / MANIFEST_NAME} was made with other settings ({settings_diff(old, settings)}); "
            "add --force to redo every file with the new ones, or choose another -o"
        )
    if force or resume is False or not state.files:
        return Plan(items, [], False)
    todo, skip = [], []
    for item in items:
        rec = state.files.get(str(item.input))
        if (
            rec is not None
            and rec.get("outputs") == expected_outputs(item)
            and _still_complete(rec, item.input, outdir, new_hash)
        ):
            skip.append((item, rec))
        else:
            todo.append(item)
    return Plan(todo, skip, True)
