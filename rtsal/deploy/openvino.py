"""``export(..., format="openvino")``: the spec's graph as OpenVINO IR (``FILE.xml`` + ``FILE.bin``).

The same graph the ``openvino`` backend runs (:mod:`rtsal.engine.backends.openvino`): inputs ``x``
(N, 3, h, w) normalised float32 and ``target`` (N,) int64 (-1 = top-1); outputs logits, top-k, the explained
class, the raw CAM at the last scale and the normalised per-scale maps at their own resolutions (upsample and
fuse them as :func:`rtsal.engine.result.assemble` does). The :class:`~rtsal.engine.spec.FastCAMSpec`, the
class names and mean/std are in the model's ``rt_info`` under ``rtsal``. Both files are written to
temporaries in the output folder and moved into place, the ``.bin`` first.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rtsal.errors import UsageError

__all__ = ["export_openvino"]

EXTRA_HINT = 'pip install "rtsal[openvino]"'


def export_openvino(explainer: Any, output: Path, size: tuple[int, int]) -> Path:
    """Write ``explainer``'s graph for input (1, 3, *size) to ``output`` (``.xml``) and its ``.bin``."""
    try:
        import openvino as ov
    except ImportError:
        raise UsageError(f"--format openvino needs openvino, which is not installed: {EXTRA_HINT}") from None
    from rtsal.engine.backends.openvino import convert

    spec = explainer.spec.for_input((1, 3, *size))
    model = convert(spec, explainer.model)
    model.set_rt_info(spec.to_json(), ["rtsal", "spec"])
    model.set_rt_info(json.dumps(list(explainer.class_names)), ["rtsal", "class_names"])
    model.set_rt_info(json.dumps([list(explainer.mean), list(explainer.std)]), ["rtsal", "mean_std"])
    folder = output.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.stem}.rtsal-", dir=folder))
    try:
        ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
        os.replace(tmp / "model.bin", output.with_suffix(".bin"))
        os.replace(tmp / "model.xml", output)
    finally:
        for p in tmp.iterdir():
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            tmp.rmdir()
    return output
