"""Outputs that never destroy a user's file (torch-free).

Two rules, for every file any command writes (see docs/design.md, "Outputs and failure"):

1. **Checked before any work.** :func:`check_outputs` refuses an output that is the same file as an input or
   as another output of the run (resolved paths *and* device/inode, so symlinks and hard links count), an
   output that is a folder, a FIFO or a device, and an output whose folder is missing or not writable.
2. **Written atomically.** :class:`AtomicPath` hands out a temporary file in the output's own folder
   (``.NAME.rtsal-XXXX.tmp.EXT``, the extension kept so encoders pick the same format); :meth:`commit`
   moves it into place with ``os.replace`` only when it is complete, :meth:`discard` removes it. At every
   moment the final path holds the old file or a complete new one; after a SIGKILL the temporary file is the
   only leftover.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from rtsal.errors import VideoIOError

__all__ = [
    "AtomicPath",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_outputs",
    "check_writable_dir",
    "same_file",
    "sha256_file",
]

StrPath = str | os.PathLike


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """Resolved path and (device, inode) when the file exists."""
    resolved = path.resolve()
    try:
        st = os.stat(path)
    except OSError:
        return resolved, None
    return resolved, (st.st_dev, st.st_ino)


def same_file(a: StrPath, b: StrPath) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path, or the same device and inode
    (a symlink or a hard link)."""
    pa, ia = _identity(Path(a))
    pb, ib = _identity(Path(b))
    return pa == pb or (ia is not None and ia == ib)


def check_writable_dir(folder: StrPath, *, what: str = "output directory") -> Path:
    """``folder`` exists, is a folder and can be written; else VideoIOError naming it."""
    d = Path(folder) if str(folder) else Path(".")
    if not d.exists():
        raise VideoIOError(f"{what} {d} does not exist")
    if not d.is_dir():
        raise VideoIOError(f"{what} {d} is not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise VideoIOError(f"{what} {d} is not writable")
    return d


def _check_target(out: Path, flag: str) -> None:
    try:
        st = os.stat(out)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise VideoIOError(f"{flag}: cannot use {out}: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise VideoIOError(f"{flag}: {out} is a directory; give a file name such as {out / 'out'}")
        if not stat.S_ISREG(st.st_mode):
            raise VideoIOError(
                f"{flag}: {out} is not a regular file (a FIFO, socket or device); choose a file"
            )
        if not os.access(out, os.W_OK) and not os.access(out.parent if str(out.parent) else ".", os.W_OK):
            raise VideoIOError(f"{flag}: cannot write {out}: permission denied")
    check_writable_dir(out.parent, what=f"{flag}: output directory")


def check_outputs(
    inputs: Iterable[StrPath | None],
    outputs: Iterable[tuple[str, StrPath | None]],
) -> list[Path]:
    """Refuse, before any work, outputs that would overwrite an input or each other, or cannot be written.

    ``outputs`` are ``(flag, path)`` pairs (``("-o", "out.mp4")``, ``("--csv", None)`` for an option not
    given) so the message names the option. Returns the outputs that are set, as paths. Raises
    :class:`VideoIOError` (one line naming the option) for a clash or a path that cannot be written.
    """
    ins = [Path(p) for p in inputs if p is not None]
    seen: list[tuple[str, Path]] = []
    for flag, raw in outputs:
        if raw is None:
            continue
        out = Path(raw)
        for inp in ins:
            if same_file(out, inp):
                raise VideoIOError(
                    f"{flag} {out} is the input file {inp}; "
                    "choose another name (inputs are never overwritten)"
                )
        for other_flag, other in seen:
            if same_file(out, other):
                raise VideoIOError(
                    f"{flag} and {other_flag} name the same file {out}; choose different names"
                )
        _check_target(out, flag)
        seen.append((flag, out))
    return [p for _, p in seen]


class AtomicPath:
    """A temporary file beside ``final`` that becomes ``final`` on :meth:`commit`.

    Use it as a context manager: an exception (or leaving without ``commit``) discards the temporary file,
    so ``final`` keeps its old content. ``tmp`` is the path to write to; its suffix equals ``final``'s.

    Example:
        >>> with AtomicPath("out.png") as a:  # doctest: +SKIP
        ...     a.tmp.write_bytes(data)
        ...     a.commit()
    """

    def __init__(self, final: StrPath, mode: int | None = None, fsync: bool = False) -> None:
        self.final = Path(final)
        self.mode = mode  # None: what a new file gets under the umask
        self.fsync = fsync
        folder = self.final.parent if str(self.final.parent) else Path(".")
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{self.final.stem}.rtsal-", suffix=f".tmp{self.final.suffix}", dir=folder
            )
        except OSError as exc:
            raise VideoIOError(f"cannot write {self.final}: {exc.strerror or exc}") from None
        os.close(fd)
        self.tmp = Path(name)
        self.committed = False

    def commit(self) -> Path:
        """Move the temporary file into place (``os.replace``, atomic within one file system)."""
        if self.committed:
            return self.final
        try:
            if self.fsync:  # on the disk before it has the final name
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
            mode = self.mode
            if mode is None:  # the mode a new file would get (mkstemp makes 0600)
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(self.tmp, mode)
            os.replace(self.tmp, self.final)
        except OSError as exc:
            self.discard()
            raise VideoIOError(f"cannot write {self.final}: {exc.strerror or exc}") from None
        self.committed = True
        return self.final

    def discard(self) -> None:
        """Remove the temporary file; ``final`` is untouched."""
        if not self.committed:
            with contextlib.suppress(OSError):
                self.tmp.unlink()

    def __enter__(self) -> AtomicPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


@contextlib.contextmanager
def _atomic(final: StrPath) -> Iterator[Path]:
    with AtomicPath(final) as a:
        yield a.tmp
        a.commit()


def sha256_file(path: StrPath, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (checksums of outputs and cache entries)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: StrPath, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    try:
        with _atomic(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        raise VideoIOError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Path(path)


def atomic_write_text(path: StrPath, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
