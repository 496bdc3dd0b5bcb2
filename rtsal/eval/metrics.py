"""How faithful a saliency map is to the model: retraining-free metrics (pure functions).

- **Deletion / insertion curves** (Petsiuk et al., RISE, 2018): replace the most salient pixels first by a
  baseline (deletion) or reveal them first over the baseline (insertion), in equal steps of the pixel count,
  and record the probability of the class the model predicted on the intact image. The baseline (substrate,
  :func:`make_baseline`) is a blurred copy of the image by default, so removing pixels removes detail without
  adding edges; black, the image's mean colour and uniform noise are the others. Area under each curve over
  the removed/revealed fraction in [0, 1]: deletion low and insertion high is better.
- **Normalised curves** (:func:`normalise_curve`): each curve divided by the intact image's probability and
  clipped to [0, 1], so an image the model is unsure of weighs as much as one it is sure of.
- **Average drop / increase in confidence** (Chattopadhyay et al., Grad-CAM++, 2018): keep only the salient
  region, ``kept = baseline + map * (image - baseline)`` (with a black baseline this is the paper's
  ``map * image``), and compare the class probability with the intact image's: drop ``max(0, y - o) / y``
  (lower is better) and increase ``o > y`` (higher is better).
- **Pointing** (Zhang et al., 2016): does the map's peak fall inside a known box of the object.

Every function takes a ``model``: any callable from a preprocessed batch (B, 3, h, w) to logits (B, classes).
Images are preprocessed float tensors, maps are (h, w) at the same resolution, higher = more salient.
Ties in a map are broken in a seeded random order, so flat regions are not removed in raster order.
Intervals and paired differences over images are in :mod:`rtsal.eval.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rtsal.names import SUBSTRATES

Model = Callable[[Tensor], Tensor]  # (B, 3, h, w) -> logits (B, classes)

__all__ = [
    "BLUR_SIGMA",
    "SUBSTRATES",
    "Curves",
    "Scores",
    "auc",
    "blur_baseline",
    "centre_map",
    "class_probability",
    "confidence_change",
    "deletion_insertion",
    "gaussian_blur",
    "keep_salient",
    "make_baseline",
    "normalise_curve",
    "pixel_counts",
    "pointing_hit",
    "random_map",
    "saliency_rank",
    "score_maps",
]

BLUR_SIGMA = 0.05  # baseline blur: Gaussian sigma as a fraction of the image's shorter side (11 px at 224)


# -- baselines for the perturbations -------------------------------------------------------------------------
def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflected borders, kernel radius 3 sigma. (N, C, h, w) -> (N, C, h, w)."""
    if sigma <= 0:
        return x.clone()
    n, c, h, w = x.shape
    radius = max(1, min(int(math.ceil(3.0 * sigma)), h - 1, w - 1))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    y = x.contiguous().reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def blur_baseline(x: Tensor, sigma: float | None = None) -> Tensor:
    """The deletion/insertion baseline: a blurred copy of ``x`` (N, 3, h, w).

    ``sigma`` in pixels; default ``BLUR_SIGMA`` times the shorter side. Blurring commutes with the per-channel
    affine normalisation, so blurring the preprocessed tensor equals blurring the photo.
    """
    if sigma is None:
        sigma = BLUR_SIGMA * min(x.shape[-2:])
    return gaussian_blur(x, sigma)


def make_baseline(
    x: Tensor,
    kind: str = "blur",
    *,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    sigma: float | None = None,
    seed: int = 0,
) -> Tensor:
    """The substrate removed pixels are replaced by, for a preprocessed image ``x`` (N, 3, h, w).

    ``mean``/``std`` are the model's preprocessing (``x = (rgb - mean) / std`` with rgb in [0, 1]), so the
    substrates are defined on the photo:

    - ``blur``: a Gaussian-blurred copy (``sigma`` pixels, default ``BLUR_SIGMA`` x the short side): detail
      goes, colours and layout stay, no new edges;
    - ``black``: rgb = 0 everywhere (the RISE deletion substrate, Grad-CAM++'s ``map * image``);
    - ``mean``: every pixel the image's own mean colour (a flat grey-ish card);
    - ``noise``: uniform rgb noise in [0, 1], seeded (new high-frequency detail everywhere).
    """
    if kind == "blur":
        return blur_baseline(x, sigma)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if kind == "black":
        return ((0.0 - m) / s).expand_as(x).clone()
    if kind == "mean":
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()
    if kind == "noise":
        g = torch.Generator().manual_seed(int(seed))
        rgb = torch.rand(x.shape, generator=g, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
        return (rgb - m) / s
    raise ValueError(f"baseline must be one of {', '.join(SUBSTRATES)}, got {kind!r}")


# -- reference maps -----------------------------------------------------------------------------------------
def random_map(size: tuple[int, int], seed: int = 0, grid: int | None = 7) -> Tensor:
    """A seeded random map in [0, 1], (h, w).

    ``grid``: uniform noise on a coarse grid upsampled bilinearly (7: blobs the size of a CAM's cells on a
    224 input), so it removes pixels in patches like a real map does; ``None``: independent noise per pixel.
    """
    h, w = size
    g = torch.Generator().manual_seed(int(seed))
    if grid is None:
        return torch.rand(h, w, generator=g)
    gh = max(1, round(grid * h / min(h, w)))
    gw = max(1, round(grid * w / min(h, w)))
    coarse = torch.rand(1, 1, gh, gw, generator=g)
    m = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)


def centre_map(size: tuple[int, int], sigma: float = 0.25) -> Tensor:
    """A centred Gaussian in [0, 1], (h, w): ``sigma`` is a fraction of the height and width (photographers'
    centre bias, the map that needs no model at all)."""
    h, w = size
    y = (torch.arange(h, dtype=torch.float32) + 0.5 - h / 2) / (sigma * h)
    x = (torch.arange(w, dtype=torch.float32) + 0.5 - w / 2) / (sigma * w)
    return torch.exp(-0.5 * (y.view(-1, 1) ** 2 + x.view(1, -1) ** 2))


# -- ordering -----------------------------------------------------------------------------------------------
def saliency_rank(maps: Tensor, seed: int = 0) -> Tensor:
    """Rank of every pixel, 0 = most salient; equal values in seeded random order. (M, h, w) -> (M, h, w)."""
    m, h, w = maps.shape
    flat = maps.detach().reshape(m, h * w).float()
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(h * w, generator=g).to(flat.device)
    order = perm[torch.argsort(flat[:, perm], dim=1, descending=True, stable=True)]  # (M, hw) pixel ids
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=flat.device).expand(m, -1).contiguous())
    return rank.view(m, h, w)


def pixel_counts(n_pixels: int, steps: int) -> Tensor:
    """Pixels removed or revealed at each point: round(k / steps * n), k = 0..steps -> (steps + 1,)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_pixels / steps).long()


# -- model outputs ------------------------------------------------------------------------------------------
def class_probability(model: Model, x: Tensor, target: int | Tensor, batch_size: int = 32) -> Tensor:
    """Softmax probability of ``target`` (one class, or one per row) of each row: (B, 3, h, w) -> (B,)."""
    tgt = torch.as_tensor(target, dtype=torch.long).flatten()
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size]).float()
            t = tgt if tgt.numel() == 1 else tgt[start : start + batch_size]
            probs = torch.softmax(logits, dim=1)
            out.append(probs.gather(1, t.to(probs.device).view(-1, 1).expand(probs.shape[0], 1))[:, 0])
    return torch.cat(out).cpu()


# -- deletion and insertion ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of M maps of one image."""

    fractions: Tensor  # (S+1,) fraction of pixels removed / revealed, 0..1
    deletion: Tensor  # (M, S+1) class probability as the most salient pixels are replaced by the baseline
    insertion: Tensor  # (M, S+1) class probability as the most salient pixels are revealed over the baseline


def deletion_insertion(
    model: Model,
    x: Tensor,
    baseline: Tensor,
    maps: Tensor,
    target: int,
    steps: int = 20,
    batch_size: int = 32,
    seed: int = 0,
) -> Curves:
    """Both curves for M maps of one image, batched: 2 * M * (steps + 1) inputs in batches of ``batch_size``.

    ``x`` and ``baseline`` (1, 3, h, w) or (3, h, w); ``maps`` (M, h, w) or (h, w); ``target`` the class.
    Deletion starts at the image's probability and ends at the baseline's; insertion the other way round.
    """
    x = x.reshape(1, *x.shape[-3:])
    baseline = baseline.reshape(1, *baseline.shape[-3:])
    maps = maps.reshape(-1, *maps.shape[-2:])
    h, w = x.shape[-2:]
    if tuple(maps.shape[-2:]) != (h, w) or tuple(baseline.shape[-2:]) != (h, w):
        raise ValueError(
            f"maps {tuple(maps.shape)} and baseline {tuple(baseline.shape)} must match x {(h, w)}"
        )
    n_maps = maps.shape[0]
    rank = saliency_rank(maps, seed).to(x.device)
    counts = pixel_counts(h * w, steps).to(x.device)
    n_points = steps + 1
    jobs = n_maps * 2 * n_points  # job j: map j // (2 P), deletion if (j // P) % 2 == 0, point j % P
    probs = []
    with torch.inference_mode():
        for start in range(0, jobs, batch_size):
            j = torch.arange(start, min(start + batch_size, jobs), device=x.device)
            m_idx, is_del, k_idx = j // (2 * n_points), (j // n_points) % 2 == 0, j % n_points
            chosen = rank[m_idx] < counts[k_idx].view(-1, 1, 1)  # (B, h, w): removed / revealed pixels
            from_image = (chosen ^ is_del.view(-1, 1, 1)).unsqueeze(1)
            batch = torch.where(from_image, x, baseline)
            probs.append(class_probability(model, batch, target, batch_size))
    p = torch.cat(probs).view(n_maps, 2, n_points)
    fractions = counts.double().cpu() / (h * w)
    return Curves(fractions.float(), p[:, 0], p[:, 1])


def auc(curve: Tensor) -> Tensor:
    """Area under curves sampled at equal steps over [0, 1] (trapezoid rule). (..., S+1) -> (...).

    Equal to the RISE reference formula ``(sum(a) - a[0]/2 - a[N-1]/2) / (N - 1)`` for N points."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


def normalise_curve(curve: Tensor, p_image: Tensor | float) -> Tensor:
    """A curve relative to the intact image, ``clip(p / p_image, 0, 1)``: (..., S+1), (...) -> (..., S+1).

    Each image then weighs the same whatever the model's confidence in it (a 5% frame and a 95% photo both
    start deletion at 1); clipping at 1 keeps an image whose probability rises above the intact one's from
    outweighing the rest, as in the literature's normalised deletion/insertion and average drop."""
    p = torch.as_tensor(p_image, dtype=curve.dtype, device=curve.device)
    if p.dim():
        p = p.unsqueeze(-1)
    return (curve / p.clamp_min(1e-12)).clamp(0.0, 1.0)


# -- keep only the salient region ---------------------------------------------------------------------------
def keep_salient(x: Tensor, baseline: Tensor, maps: Tensor) -> Tensor:
    """``baseline + map * (x - baseline)`` per map: (1, 3, h, w), (1, 3, h, w), (M, h, w) -> (M, 3, h, w)."""
    m = maps.reshape(-1, 1, *maps.shape[-2:]).clamp(0, 1).to(x.dtype)
    return baseline + m * (x - baseline)


def confidence_change(
    model: Model, x: Tensor, baseline: Tensor, maps: Tensor, target: int, batch_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Average-drop and increase-in-confidence terms of M maps of one image: ``(drop (M,), increase (M,))``.

    drop = max(0, y - o) / y and increase = 1.0 if o > y else 0.0, with y the class probability of the image
    and o that of :func:`keep_salient`. Average them over images for the paper's numbers (x100 for percent).
    """
    x = x.reshape(1, *x.shape[-3:])
    baseline = baseline.reshape(1, *baseline.shape[-3:])
    maps = maps.reshape(-1, *maps.shape[-2:])
    y = class_probability(model, x, target)[0]
    o = class_probability(model, keep_salient(x, baseline, maps), target, batch_size)
    drop = (y - o).clamp_min(0) / y.clamp_min(1e-12)
    return drop, (o > y).float()


# -- every measure at once ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    """Every measure of M maps of one image, each (M,), plus the curves they come from.

    Raw measures follow the class probability; normalised ones (``n_``) divide every probability by the
    intact image's (clipped to [0, 1]), so every image weighs the same. ``drop`` is relative already (the
    paper's); ``drop_abs`` is the same drop in probability. ``increase`` (o > y) is scale-free."""

    p_image: float  # class probability on the intact image
    curves: Curves
    insertion: Tensor
    deletion: Tensor
    n_insertion: Tensor
    n_deletion: Tensor
    drop: Tensor  # max(0, y - o) / y
    drop_abs: Tensor  # max(0, y - o)
    increase: Tensor  # 1.0 where o > y

    @property
    def ins_minus_del(self) -> Tensor:
        return self.insertion - self.deletion

    @property
    def n_ins_minus_del(self) -> Tensor:
        return self.n_insertion - self.n_deletion


def score_maps(
    model: Model,
    x: Tensor,
    baseline: Tensor,
    maps: Tensor,
    target: int,
    steps: int = 20,
    batch_size: int = 32,
    seed: int = 0,
) -> Scores:
    """Deletion/insertion (raw and normalised) and average drop/increase of M maps (M, h, w) of one image."""
    c = deletion_insertion(model, x, baseline, maps, target, steps, batch_size, seed)
    p0 = c.deletion[0, 0]  # every deletion curve starts at the intact image
    y = float(p0)
    o = class_probability(
        model,
        keep_salient(
            x.reshape(1, *x.shape[-3:]),
            baseline.reshape(1, *baseline.shape[-3:]),
            maps.reshape(-1, *maps.shape[-2:]),
        ),
        target,
        batch_size,
    )
    drop_abs = (p0 - o).clamp_min(0)
    return Scores(
        p_image=y,
        curves=c,
        insertion=auc(c.insertion),
        deletion=auc(c.deletion),
        n_insertion=auc(normalise_curve(c.insertion, p0)),
        n_deletion=auc(normalise_curve(c.deletion, p0)),
        drop=drop_abs / p0.clamp_min(1e-12),
        drop_abs=drop_abs,
        increase=(o > p0).float(),
    )


# -- pointing -----------------------------------------------------------------------------------------------
def pointing_hit(maps: Tensor, box: Sequence[float], tolerance: float = 0.0, seed: int = 0) -> Tensor:
    """Whether each map's peak (ties broken as in :func:`saliency_rank`) lies in ``box`` = (x0, y0, x1, y1)
    in the maps' pixel coordinates, grown by ``tolerance`` pixels. (M, h, w) -> (M,) bool."""
    maps = maps.reshape(-1, *maps.shape[-2:])
    w = maps.shape[-1]
    peak = saliency_rank(maps, seed).flatten(1).argmin(dim=1).cpu()
    py, px = (peak // w).double() + 0.5, (peak % w).double() + 0.5
    x0, y0, x1, y1 = (float(v) for v in box)
    t = float(tolerance)
    return (px >= x0 - t) & (px <= x1 + t) & (py >= y0 - t) & (py <= y1 + t)
