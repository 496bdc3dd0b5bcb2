"""Every rtsal method and the installed peers, timed against a plain forward pass (``rtsal bench``).

    python benchmarks/methods.py --model resnet50 --weights none --size 224
    python benchmarks/methods.py --model efficientnet-lite0 --size 224

Takes every ``rtsal bench`` option; prints the table and writes
``benchmarks/results/methods-<model>-<size>.json`` and ``.png`` unless ``--json``/``--plot`` are given.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rtsal.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def option(args: list[str], name: str, default: str) -> str:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def with_outputs(args: list[str], stem: str, suffixes: dict[str, str]) -> list[str]:
    """Add ``--json``/``--plot`` into benchmarks/results unless given."""
    out = list(args)
    for flag, suffix in suffixes.items():
        if option(out, flag, "") == "":
            RESULTS.mkdir(exist_ok=True)
            out += [flag, str(RESULTS / f"{stem}{suffix}")]
    return out


if __name__ == "__main__":
    argv = sys.argv[1:]
    stem = f"methods-{option(argv, '--model', 'efficientnet-lite0')}-{option(argv, '--size', '224')}"
    sys.exit(main(["bench", *with_outputs(argv, stem, {"--json": ".json", "--plot": ".png"})]))
