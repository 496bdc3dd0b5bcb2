"""``python -m rtsal.engine.build JOB.json``: build one compiled graph into the cache, in a child process.

The job names the Explainer settings (a registered model with its weights), the input shape, the expected
cache spec and the cache folder, and the temporary files to remove once read (the job itself, a state dict of
random weights): the parent may have ended meanwhile (a build left to finish). The child rebuilds the
Explainer, checks that its spec (weights hash included) equals the parent's, builds the package into the cache
(or finds it built by another process that held the key's lock) and exits 0. Exit 3: the model built here is
not the parent's (the parent then builds in its own process); exit 1: the build failed (stderr says why).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys


def main(argv: list[str]) -> int:
    import torch

    from rtsal.engine.compiled import CompiledEngine
    from rtsal.engine.explainer import Explainer

    # SIGTERM (the parent's close(detach=False)) unwinds, so the temporary package file is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    job = json.loads(open(argv[0], encoding="utf-8").read())
    torch.set_num_threads(1)  # leave the other cores to the engine that serves frames meanwhile
    kwargs = dict(job["explainer"])
    if isinstance(kwargs.get("size"), list):
        kwargs["size"] = tuple(kwargs["size"])
    precision = kwargs.pop("precision", "f32")  # the eager explainer here computes at f32; the build lowers
    try:
        ex = Explainer(**kwargs, compile=False)
        ex.precision = precision
    finally:  # the job and the weights file are read: remove them (the parent may be gone)
        for path in job.get("delete", []):
            with contextlib.suppress(OSError):
                os.unlink(path)
    with ex:
        engine = CompiledEngine(ex, True, cache_dir=job["cache"])
        shape = tuple(job["shape"])
        spec = engine.spec(shape)
        if spec != job["spec"]:
            return 3
        engine.cache.store(spec, lambda tmp: engine._build_here(shape, tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
