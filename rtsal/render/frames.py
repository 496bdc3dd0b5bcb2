"""Per-frame helpers for render stages: pick one image of a batch result and bring its maps to the host
(numpy only, so a render thread starts no torch thread pool). The views resize the maps to the frame."""

from __future__ import annotations

from dataclasses import replace
from typing import Any


def select(result: Any, i: int) -> Any:
    """Image ``i`` of a batch result as a one-image result (views, smoothing and saving take those)."""
    from rtsal.types import TopK

    def one(t: Any) -> Any:
        return None if t is None else t[i : i + 1]

    tk = result.topk
    return replace(
        result,
        logits=one(result.logits),
        topk=TopK(tk.indices[i : i + 1], tk.probs[i : i + 1], tk.labels[i : i + 1]),
        target=one(result.target),
        saliency=one(result.saliency),
        scales=one(result.scales),
        smoe=one(result.smoe),
        cam=one(result.cam),
        fused=one(result.fused),
        nonclass=one(result.nonclass),
    )


def to_host(result: Any, fields: tuple[str, ...]) -> Any:
    """The result with the named maps as float32 numpy arrays (one host copy each; none on the CPU).

    The render stage then works with numpy and OpenCV only: torch calls there would start a second pool of
    intra-op threads that competes with the model's for the same cores."""
    import numpy as np

    updates = {}
    for name in fields:
        m = getattr(result, name)
        if m is not None and not isinstance(m, np.ndarray):
            updates[name] = m.detach().float().cpu().numpy()
    return replace(result, **updates) if updates else result
