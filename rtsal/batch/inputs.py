"""The files of a batch: video files, folders (recursive) and globs, each with its place under OUTDIR.

A file given by name keeps only its name (``a/b/clip.avi`` -> ``clip``); a folder's files keep their path
inside the folder (``archive/2024/cam1.mp4`` -> ``2024/cam1``); a glob's matches keep their path below the
glob's first wildcard-free folder (``footage/*/day*.mkv`` -> ``site3/day2``). Each output is that relative
stem plus an extension, so OUTDIR mirrors the input tree. Files inside OUTDIR are never inputs (a second run
must not explain its own outputs), the same file named twice is taken once, and two inputs that would write
the same output are refused before any work.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rtsal.errors import UsageError

__all__ = ["VIDEO_EXTENSIONS", "BatchItem", "declared_frames", "expand_inputs"]

# what a folder or a glob contributes; a file named on its own is taken whatever its extension
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .mov .avi .webm .mpg .mpeg .ts .mts .m2ts .wmv .flv .3gp .ogv .mxf .y4m".split()
)


@dataclass(frozen=True)
class BatchItem:
    """One input file and its output stem relative to OUTDIR (POSIX form, no extension)."""

    input: Path  # absolute
    rel: str  # e.g. "2024/cam1"

    def output(self, outdir: Path, suffix: str) -> Path:
        """``OUTDIR/<rel><suffix>``, e.g. ``output(out, ".mp4")``."""
        return outdir / f"{self.rel}{suffix}"


def _is_glob(text: str) -> bool:
    return glob.has_magic(text)


def _glob_root(pattern: str) -> Path:
    """The longest leading folder of ``pattern`` without wildcards."""
    parts = Path(pattern).parts
    keep: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        keep.append(part)
    return Path(*keep) if keep else Path(".")


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _stem(rel: Path) -> str:
    return str(PurePosixPath(*rel.parts).with_suffix(""))


def _walk(folder: Path, exclude: Path | None) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not _inside((here / d).resolve(), exclude)
        )
        for name in sorted(filenames):
            p = here / name
            if not name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS:
                found.append(p)
    return found


def expand_inputs(items: list[str], outdir: str | os.PathLike | None = None) -> list[BatchItem]:
    """Expand files, folders and globs into :class:`BatchItem` s in a stable order.

    Raises :class:`UsageError` for a path that does not exist, a glob or folder with no video file, or two
    inputs that would write the same output.
    """
    exclude = Path(outdir).resolve() if outdir is not None else None
    pairs: list[tuple[Path, str]] = []
    for text in items:
        path = Path(text)
        if path.is_file():
            pairs.append((path, path.stem))
        elif path.is_dir():
            files = _walk(path, exclude)
            if not files:
                raise UsageError(f"folder {text} holds no video file ({', '.join(sorted(VIDEO_EXTENSIONS))})")
            pairs += [(f, _stem(f.relative_to(path))) for f in files]
        elif _is_glob(text):
            root = _glob_root(text)
            matches = [
                Path(m)
                for m in sorted(glob.glob(text, recursive=True))
                if Path(m).is_file() and not _inside(Path(m).resolve(), exclude)
            ]
            if not matches:
                raise UsageError(f"no file matches {text}")
            pairs += [(m, _stem(m.relative_to(root))) for m in matches]
        elif path.exists():
            raise UsageError(f"{text} is not a regular file or a folder")
        else:
            raise UsageError(f"{text} does not exist")
    out: list[BatchItem] = []
    seen_inputs: set[Path] = set()
    seen_rel: dict[str, Path] = {}
    for path, rel in pairs:
        absolute = path.resolve()
        if absolute in seen_inputs:
            continue
        if _inside(absolute, exclude):
            raise UsageError(f"{path} is inside the output folder {outdir}; choose another -o")
        seen_inputs.add(absolute)
        key = rel.casefold()  # case-insensitive file systems would merge them
        if key in seen_rel:
            raise UsageError(
                f"{seen_rel[key]} and {path} would both write {rel}.mp4; rename one or give their folder"
            )
        seen_rel[key] = path
        out.append(BatchItem(absolute, rel))
    if not out:
        raise UsageError("no input file")
    return out


def declared_frames(path: str | os.PathLike) -> int | None:
    """The frame count the container declares for its first video stream (None if it declares none or
    cannot be opened: the task then reports why)."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return None
            n = c.streams.video[0].frames
            return int(n) if n and n > 0 else None
    except (av.FFmpegError, OSError, ValueError):
        return None
