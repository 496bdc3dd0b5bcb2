"""Temporal smoothing of live maps: an exponential moving average, so that maps do not flicker.

``MapSmoother(weight)`` keeps, per map field, ``s_t = weight * s_{t-1} + (1 - weight) * m_t`` (``weight``
is ``--smooth``: 0 = off, 0.5 = half of the old map kept each frame, towards 1 = slower). The engine's maps
are already on a fixed [0, 1] scale per frame, and an EMA is a convex combination, so the smoothed map stays
on that same scale: nothing is stretched per frame afterwards (a per-frame min-max stretch of the average
would bring the flicker back, and a fading region would jump to full brightness). The state restarts when
the frame size, the method or the explained class changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rtsal.types import SaliencyResult

MAP_FIELDS = ("saliency", "scales", "smoe", "cam")



class MapSmoother:
    """EMA over the maps of consecutive one-image results (batch size 1, as the live pipeline delivers)."""

    def __init__(self, weight: float) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing weight must be within 0..1 (1 excluded), got {weight}")
        self.weight = float(weight)
        self._state: dict[str, Any] = {}
        self._key: tuple | None = None

    def reset(self) -> None:
        self._state.clear()
        self._key = None

    def __call__(self, result: SaliencyResult, fields: tuple[str, ...] = ("saliency",)) -> SaliencyResult:
        """The result with the named map fields replaced by their running average (same shapes, [0, 1])."""
        if self.weight == 0.0:
            return result
        key = (tuple(result.saliency.shape), result.method, _target_key(result))
        if key != self._key:
            self.reset()
            self._key = key
        updates = {}
        for name in fields:
            m = getattr(result, name, None)
            if m is None:
                continue
            prev = self._state.get(name)
            updates[name] = self._state[name] = m if prev is None or prev.shape != m.shape else _ema(prev, m,
                                                                                                     self.weight)
        return replace(result, **updates) if updates else result


def _target_key(result: SaliencyResult) -> tuple[int, ...]:
    t = result.target
    return tuple(int(v) for v in t.reshape(-1).tolist()) if hasattr(t, "reshape") else ()


def _ema(prev: Any, m: Any, weight: float) -> Any:
    """``weight * prev + (1 - weight) * m`` as a new array/tensor (no in-place change of either input)."""
    if hasattr(m, "detach"):
        import torch

        with torch.inference_mode():
            return torch.lerp(m.float(), prev.to(m.device, torch.float32), weight)
    return weight * prev + (1.0 - weight) * m
