"""``python -m rtsal.engine.build JOB.json``: build one compiled graph into the cache, in a child process.

The job is the :class:`~rtsal.engine.spec.FastCAMSpec` as JSON (with its input shape), what rebuilds the
model (``{"model": NAME, "weights": "default" | PATH}``, see
:func:`rtsal.engine.backends.compiled.rebuild_args`), the device, the cache folder, and the temporary files to
remove once read (the job itself, a state dict of random weights): the parent may have ended meanwhile (a
build left to finish). The child rebuilds the module, checks that its class and weights hash are the spec's,
builds the package into the cache (or finds it built by another process that held the key's lock) and exits
0; with ``"plain": true``, the package of the plain model instead (the compiled backend's baseline).
Exit 3: the model cannot be rebuilt here or is not the parent's (the parent then builds in its own process);
exit 1: the build failed (stderr says why).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys


def main(argv: list[str]) -> int:
    import torch

    from rtsal.engine.backends.compiled import (
        CHILD_NOT_SAME,
        build_entry,
        build_plain_entry,
        cache_key,
        plain_key,
        rebuild_model,
    )
    from rtsal.engine.cache import Cache
    from rtsal.engine.spec import FastCAMSpec

    # SIGTERM (the parent's close(detach=False)) unwinds, so the temporary package file is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    job = json.loads(open(argv[0], encoding="utf-8").read())
    torch.set_num_threads(1)  # leave the other cores to the engine that serves frames meanwhile
    try:
        spec = FastCAMSpec.from_json(job["spec"])
        device = str(job.get("device", "cpu"))
        try:
            model = rebuild_model(job["model"], spec, device)
        except Exception as exc:  # noqa: BLE001 - any failure to rebuild: the parent builds itself
            print(f"rtsal.engine.build: cannot rebuild {job['model'].get('model')!r}: {exc}", file=sys.stderr)
            return CHILD_NOT_SAME
    finally:  # the job and the weights file are read: remove them (the parent may be gone)
        for path in job.get("delete", []):
            with contextlib.suppress(OSError):
                os.unlink(path)
    if model is None:
        return CHILD_NOT_SAME
    cache = Cache(job["cache"])
    if job.get("plain"):  # the plain model's package: the compiled backend's baseline
        cache.store(plain_key(spec, device), lambda tmp: build_plain_entry(spec, model, tmp, device))
    else:
        cache.store(cache_key(spec, device), lambda tmp: build_entry(spec, model, tmp, device))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
