"""What CSKIP's K does to Score-CAM: time per frame and agreement with full Score-CAM (all channels).

    python benchmarks/cskip.py --model efficientnet-lite0 --size 224
    python benchmarks/cskip.py --model efficientnet-lite0 --size 224 --ks 0,4,8,16,32,64,128,256

Maps are compared on the four bundled photos (Pearson correlation of the normalised maps at image size);
use pretrained weights, a random model's maps say nothing. Writes
``benchmarks/results/cskip-<model>-<size>.json`` unless ``--json`` is given; other ``rtsal bench`` options
pass through.
"""

from __future__ import annotations

import sys

from methods import option, with_outputs

from rtsal.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    ks = option(argv, "--ks", "0,4,8,16,32,64,128,256")
    if "--ks" in argv:
        i = argv.index("--ks")
        del argv[i : i + 2]
    argv = [a for a in argv if not a.startswith("--ks=")]
    stem = f"cskip-{option(argv, '--model', 'efficientnet-lite0')}-{option(argv, '--size', '224')}"
    sys.exit(main(["bench", "--cskip-sweep", ks, *with_outputs(argv, stem, {"--json": ".json"})]))
