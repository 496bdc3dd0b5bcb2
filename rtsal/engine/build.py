"""``python -m rtsal.engine.build JOB.json``: build one compiled graph into the cache, in a child process.

The job names the Explainer settings (a registered model with its weights), the input shape, the expected
cache spec and the cache folder. The child rebuilds the Explainer, checks that its spec (weights hash
included) equals the parent's, builds the package into the cache and exits 0. Exit 3: the model built here
is not the parent's (the parent then builds in its own process); exit 1: the build failed (stderr says why).
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import torch

    from rtsal.engine.compiled import CompiledEngine
    from rtsal.engine.explainer import Explainer

    job = json.loads(open(argv[0], encoding="utf-8").read())
    torch.set_num_threads(1)  # leave the other cores to the engine that serves frames meanwhile
    kwargs = dict(job["explainer"])
    if isinstance(kwargs.get("size"), list):
        kwargs["size"] = tuple(kwargs["size"])
    with Explainer(**kwargs, compile=False) as ex:
        engine = CompiledEngine(ex, True, cache_dir=job["cache"])
        shape = tuple(job["shape"])
        spec = engine.spec(shape)
        if spec != job["spec"]:
            return 3
        engine.cache.store(spec, lambda tmp: engine._build_here(shape, tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
