"""The on-disk cache of compiled graphs (torch-free).

A compiled package is code that will be loaded into this process, so the cache trusts only what rtsal wrote:

- **The folder** is ``--cache-dir``, else ``$RTSAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/rtsal``, else
  ``~/.cache/rtsal``. It is created with mode 0700 and used only while it belongs to this user and no one else
  can write it.
- **An entry** is ``KEY.pt2`` (the package) plus ``KEY.json`` (what it was built for, its size and SHA-256).
  KEY is the SHA-256 of the spec: model identity with a hash of its weights, input shape, method and its
  options, dtype, device, torch version, CPU capability, graph format.
- **Before loading**, the record must parse, name the same spec and torch version, and the package's size and
  SHA-256 must match what was recorded at write time; anything else (truncated, corrupt, foreign, another
  torch) is deleted and rebuilt.
- **Writes are atomic**: the package and then its record go to a temporary file in the folder and are moved
  into place with ``os.replace`` (:class:`rtsal.outputs.AtomicPath`, mode 0600, fsync first), so two
  processes can share the folder and a crash leaves no half entry.
- **One build per key**: a build holds ``KEY.lock`` (``flock``); another process wanting the same key waits
  and loads what the first one wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rtsal.errors import RtsalError
from rtsal.outputs import AtomicPath, sha256_file

__all__ = ["Cache", "CacheEntry", "CacheError", "FORMAT", "default_cache_dir", "spec_key"]

FORMAT = 2  # bump when the graph's inputs or outputs change (2: per-scale maps at their own sizes)
PACKAGE = ".pt2"
RECORD = ".json"
ARTIFACTS = (PACKAGE, ".ovblob", ".onnx")  # what an entry may hold: an AOTInductor package, an OpenVINO blob
LOCK = ".lock"  # KEY.lock: held (flock) by the process building KEY, removed when it is done


class CacheError(RtsalError):
    """The cache folder cannot be used safely (another owner, writable by others, not a folder)."""


def default_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$RTSAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/rtsal``, else ``~/.cache/rtsal``."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("RTSAL_CACHE_DIR"):
        return Path(os.environ["RTSAL_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    xdg_ok = xdg and os.path.isabs(os.path.expanduser(xdg))  # the XDG spec: ignore a relative path
    base = Path(xdg).expanduser() if xdg_ok else Path.home() / ".cache"
    return base / "rtsal"


def spec_key(spec: Mapping[str, object]) -> str:
    """The entry name of a spec: SHA-256 of its canonical JSON, 32 hex digits."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class CacheEntry:
    """One entry as ``rtsal cache`` lists it."""

    key: str
    model: str
    shape: tuple[int, ...]  # the input (N, 3, h, w)
    method: str
    bytes: int
    created: float
    valid: bool  # record readable and the package's size matches (the checksum is verified on load)


class Cache:
    """The cache folder; see the module docstring for the rules."""

    def __init__(self, root: str | os.PathLike | None = None, suffix: str = PACKAGE) -> None:
        self.root = default_cache_dir(root)
        self.suffix = suffix  # the artifact's file name ending: .pt2 (AOTInductor), .ovblob (OpenVINO), .onnx

    # -- the folder -----------------------------------------------------------------------------------------
    def ensure(self) -> Path:
        """Create the folder (0700) if needed; raise :class:`CacheError` when it is not safe to use."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.stat(self.root)
        except OSError as exc:
            raise CacheError(f"cannot create the cache folder {self.root}: {exc.strerror or exc}") from None
        self._check(st)
        return self.root

    def _check(self, st: os.stat_result) -> None:
        if not stat.S_ISDIR(st.st_mode):
            raise CacheError(f"cache folder {self.root} is not a directory")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise CacheError(f"cache folder {self.root} belongs to another user; not loading code from it")
        if st.st_mode & 0o022:
            raise CacheError(f"cache folder {self.root} is writable by others; not loading code from it "
                             f"(chmod 700 it or choose another --cache-dir)")

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}{self.suffix}", self.root / f"{key}{RECORD}"

    # -- entries --------------------------------------------------------------------------------------------
    def lookup(self, spec: Mapping[str, object]) -> Path | None:
        """The package built for ``spec``, verified; None when missing. A bad entry is removed."""
        key = spec_key(spec)
        package, record = self.paths(key)
        if not record.exists() and not package.exists():
            return None
        self.ensure()
        if self._verify(spec, package, record):
            return package
        self.remove(key)
        return None

    def _verify(self, spec: Mapping[str, object], package: Path, record: Path) -> bool:
        try:
            meta = json.loads(record.read_text(encoding="utf-8"))
            st = os.stat(package)
        except (OSError, ValueError):
            return False
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("spec") != json.loads(
            json.dumps(spec)
        ):
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != meta.get("bytes"):
            return False
        try:
            return sha256_file(package) == meta.get("sha256")
        except OSError:
            return False

    def store(self, spec: Mapping[str, object], write: Callable[[Path], object]) -> Path:
        """Build an entry: ``write(tmp_path)`` writes the package to a temporary ``.pt2`` path in the folder;
        its checksum is recorded and both files are moved into place atomically. Returns the package.

        One build per key at a time across processes: the build holds ``KEY.lock`` (``flock``, released by
        the kernel if the process dies; the file is removed when the build is done); a second process waits
        for it and returns the entry it wrote instead of building the same graph again."""
        self.ensure()
        key = spec_key(spec)
        with self.build_lock(key):
            found = self.lookup(spec)
            if found is not None:
                return found
            return self._store(spec, key, write)

    @contextlib.contextmanager
    def build_lock(self, key: str) -> Iterator[None]:
        """Hold the build lock of ``key`` (blocks while another process builds it). No-op without fcntl."""
        try:
            import fcntl
        except ImportError:  # not POSIX: two processes may build the same key (the writes stay atomic)
            yield
            return
        path = self.root / f"{key}{LOCK}"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the holder before us removes the file on release: lock the file that is there now
                here, now = os.fstat(fd), os.stat(path)
                if (here.st_ino, here.st_dev) == (now.st_ino, now.st_dev):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()  # still holding it: nothing is left in the folder once the build is done
            os.close(fd)  # releases the lock

    def building(self, key: str) -> bool:
        """Whether another process holds the build lock of ``key`` now."""
        try:
            import fcntl
        except ImportError:
            return False
        try:
            fd = os.open(self.root / f"{key}{LOCK}", os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def _store(self, spec: Mapping[str, object], key: str, write: Callable[[Path], object]) -> Path:
        package, record = self.paths(key)
        with AtomicPath(package, mode=0o600, fsync=True) as out:
            write(out.tmp)
            digest, size = sha256_file(out.tmp), os.stat(out.tmp).st_size
            out.commit()
        meta = {"format": FORMAT, "spec": spec, "sha256": digest, "bytes": size, "created": time.time()}
        with AtomicPath(record, mode=0o600, fsync=True) as out:
            out.tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
            out.commit()
        return package

    def remove(self, key: str) -> None:
        for p in self.paths(key):
            with contextlib.suppress(OSError):
                p.unlink()

    def entries(self) -> list[CacheEntry]:
        """Every entry in the folder (newest first); an empty list when the folder does not exist."""
        if not self.root.is_dir():
            return []
        out = []
        for record in self.root.glob(f"*{RECORD}"):
            key = record.name[: -len(RECORD)]
            package = next((p for p in (self.root / f"{key}{s}" for s in ARTIFACTS) if p.exists()),
                           self.root / f"{key}{PACKAGE}")
            try:
                meta = json.loads(record.read_text(encoding="utf-8"))
                spec = meta["spec"]
                size = os.stat(package).st_size
                valid = size == meta.get("bytes") and meta.get("format") == FORMAT
                out.append(CacheEntry(key, str(spec.get("model")), tuple(spec.get("shape", ())),
                                      str(spec.get("method")), size,
                                      float(meta.get("created", 0)), valid))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                size = package.stat().st_size if package.exists() else 0
                out.append(CacheEntry(key, "?", (), "?", size, record.stat().st_mtime, False))
        for package in (p for s in ARTIFACTS for p in self.root.glob(f"*{s}")):
            key = package.name[: -len(package.suffix)]
            if not key.startswith(".") and not (self.root / f"{key}{RECORD}").exists():
                st = package.stat()
                out.append(CacheEntry(key, "?", (), "?", st.st_size, st.st_mtime, False))
        return sorted(out, key=lambda e: -e.created)

    def clear(self) -> tuple[int, int]:
        """Remove every entry and leftover temporary file; returns (files removed, bytes freed)."""
        if not self.root.is_dir():
            return 0, 0
        count = freed = 0
        for p in self.root.iterdir():
            if p.is_file() and (p.suffix in (*ARTIFACTS, RECORD, LOCK) or ".tmp" in p.name):
                try:
                    size = p.stat().st_size
                    p.unlink()
                except OSError:
                    continue
                count += 1
                freed += size
        return count, freed
