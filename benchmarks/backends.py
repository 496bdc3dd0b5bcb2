"""Every installed backend: its plain forward pass against the explained ``fastcam`` call, interleaved.

For each model at 224x224, batch 1, ``--threads`` threads, one run times every row in one loop (the order
rotates each round; see :mod:`rtsal.bench.backends` for the rows): the plain forward of each runtime as a
user would build it (eager PyTorch, ``torch.compile`` with freezing under ``inference_mode``, ONNX Runtime's
default session, OpenVINO with default settings and at f32/bf16) and rtsal's explained call on the same
runtime (``Explainer(backend=...).explain`` from a preprocessed tensor: graph + host assembly). Ratios are
to the plain row of the same runtime and precision. Lite0 has its bundled weights; the others are random
(same timings).

    python benchmarks/backends.py --json benchmarks/results/backends.json
    python benchmarks/backends.py --models efficientnet-lite0 --rounds 20 --skip compiled
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.bench.backends import measure, table  # noqa: E402

MODELS = ("efficientnet-lite0", "resnet50", "mobilenet_v3_large")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--skip", default="", help="backends to leave out: torch,compiled,onnxruntime,openvino")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    backends = tuple(b for b in ("torch", "compiled", "onnxruntime", "openvino") if b not in skip)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "load_1min": os.getloadavg()[0]},
               "settings": vars(args), "models": {}}
    for name in args.models.split(","):
        weights = "default" if name.startswith("efficientnet-lite") else None
        rows, builds = measure(name, weights, args.size, args.threads, args.rounds, backends, args.cache_dir,
                               log=lambda s: print(s, file=sys.stderr, flush=True))
        print(table(name, rows), flush=True)
        print(f"load average now: {os.getloadavg()[0]:.1f}\n", flush=True)
        results["models"][name] = {"rows": [r.as_dict() for r in rows], "build_s": builds,
                                   "load_1min_after": os.getloadavg()[0]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
