"""Per-frame arrays streamed into an ``.npz`` file: memory stays flat however long the video is.

Each frame's arrays are appended to raw temporary files next to the output; :meth:`MapsWriter.close` writes
them into the ``.npz`` (a zip of ``.npy`` members, as ``np.savez`` makes, readable by ``np.load``) and moves
it into place in one step, so a half-written ``.npz`` is never left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rtsal.errors import VideoIOError


class MapsWriter:
    """Collect per-frame arrays (``add``) and fixed metadata (``meta``) into one ``.npz``.

    Every ``add`` call must pass the same names with the same per-frame shapes and dtypes; member ``k`` of the
    file is then (frames, *shape). ``meta`` values are saved as they are (strings become 0-d str arrays).
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.meta = dict(meta or {})
        self.frames = 0
        self._spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._files: dict[str, BinaryIO] = {}
        try:
            self._tmp = tempfile.TemporaryDirectory(prefix=".rtsal-maps-", dir=self.path.parent or ".")
        except OSError as exc:
            raise VideoIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._closed = False

    def __enter__(self) -> MapsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, **arrays: np.ndarray) -> None:
        """Append one frame's arrays, e.g. ``add(saliency=(h, w) float16, pts=0.04)``."""
        if self._closed:
            raise RuntimeError("this MapsWriter is closed")
        if not self._spec:
            for name, value in arrays.items():
                a = np.asarray(value)
                self._spec[name] = (a.shape, a.dtype)
                self._files[name] = open(os.path.join(self._tmp.name, f"{name}.raw"), "wb")  # noqa: SIM115
        if set(arrays) != set(self._spec):
            raise ValueError(
                f"add() takes the same names every frame: {sorted(self._spec)}, got {sorted(arrays)}"
            )
        for name, value in arrays.items():
            shape, dtype = self._spec[name]
            a = np.asarray(value, dtype=dtype)
            if a.shape != shape:
                raise ValueError(f"{name}: frame {self.frames} has shape {a.shape}, the first had {shape}")
            try:
                self._files[name].write(a.tobytes())
            except OSError as exc:
                raise VideoIOError(f"cannot write maps for {self.path}: {exc.strerror or exc}") from None
        self.frames += 1

    def abort(self) -> None:
        """Remove the temporaries without writing the ``.npz`` (an older file at the path stays)."""
        if self._closed:
            return
        self._closed = True
        for f in self._files.values():
            f.close()
        self._tmp.cleanup()

    def close(self) -> None:
        """Write the ``.npz`` (also with zero frames: members then have length 0) and remove temporaries."""
        if self._closed:
            return
        self._closed = True
        try:
            for f in self._files.values():
                f.close()
            part = Path(self._tmp.name) / "out.npz"
            with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, (shape, dtype) in self._spec.items():
                    header = {
                        "descr": np.lib.format.dtype_to_descr(dtype),
                        "fortran_order": False,
                        "shape": (self.frames, *shape),
                    }
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array_header_2_0(member, header)
                        with open(os.path.join(self._tmp.name, f"{name}.raw"), "rb") as raw:
                            shutil.copyfileobj(raw, member, 1 << 20)
                for name, value in self.meta.items():
                    if name in self._spec:
                        raise ValueError(f"{name!r} is both a per-frame array and metadata")
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
            os.replace(part, self.path)
        except OSError as exc:
            raise VideoIOError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        finally:
            self._tmp.cleanup()
