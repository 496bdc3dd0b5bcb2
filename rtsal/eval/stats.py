"""Intervals over images (torch-free): a mean with its t-interval, and paired bootstrap differences.

The unit of resampling is the image (a photo, or one frame of a clip): every method is scored on the same
images, so two methods are compared image by image (a *paired* difference), which removes the spread that
comes from some images being easy for every method. Frames of one clip are not independent; intervals over
them are narrower than intervals over as many unrelated photos would be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["PairedDifference", "mean_ci", "paired_bootstrap", "t_quantile"]

T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)  # Student's t, 97.5% quantile, 1..30 degrees of freedom


def t_quantile(df: int) -> float:
    """Two-sided 95% Student's t quantile for ``df`` degrees of freedom (table to 30, then Cornish-Fisher)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float] | Any) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval over the values (NaN half-width for fewer than two)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan
    return mean, t_quantile(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)


@dataclass(frozen=True)
class PairedDifference:
    """``a − b`` over the same images: mean, 95% bootstrap percentile interval, images where a > b."""

    a: str
    b: str
    measure: str
    mean: float
    low: float
    high: float
    wins: int  # images where a scores higher than b
    n: int

    @property
    def verdict(self) -> str:
        """``>`` when the interval lies above 0, ``<`` below, ``~`` when it holds 0 (no difference shown)."""
        if self.low > 0:
            return ">"
        if self.high < 0:
            return "<"
        return "~"

    def line(self) -> str:
        """``fastcam > gradcampp: +0.030 [+0.010, +0.050], 41/60 images``."""
        text = (
            f"{self.a} {self.verdict} {self.b}: {self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}], "
            f"{self.wins}/{self.n} images"
        )
        return text + (" (no difference shown)" if self.verdict == "~" else "")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    names: tuple[str, str] = ("a", "b"),
    measure: str = "",
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Mean of ``a[i] − b[i]`` with its 95% percentile bootstrap interval: the images are drawn with
    replacement ``resamples`` times (seeded), the mean difference of each draw recorded, and the 2.5% and
    97.5% quantiles of those means taken. One image gives a zero-width interval at its difference."""
    x = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or len(a) != len(b):
        raise ValueError(f"paired values must be two equal, non-empty lists, got {len(a)} and {len(b)}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // x.size)  # bound the index array's memory
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start : start + k] = x[rng.integers(0, x.size, size=(k, x.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return PairedDifference(
        a=names[0],
        b=names[1],
        measure=measure,
        mean=float(x.mean()),
        low=float(low),
        high=float(high),
        wins=int((x > 0).sum()),
        n=int(x.size),
    )
