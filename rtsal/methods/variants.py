"""Run the part of a model after one layer on many variants of that layer's output: the one ablation loop
that Ablation-CAM and FastAblationCAM share (:class:`AblationRunner`, :func:`score_drops`).

A forward hook replaces the layer's output by a (B, C, h, w) batch of variants, so only the layers after it
see batch size B. Three ways to feed the model, tried in order and remembered:

1. ``expand``: the image at batch size 1; the trunk runs once per batch of variants. Works unless a later
   layer takes its batch size from the input or concatenates a tensor from before the layer.
2. ``small``: B copies of a 32x32 input: the trunk's output is thrown away and costs little. Used only
   after a check that an unmodified variant gives the true logits (no tensor from before the layer reaches
   the layers after it).
3. ``repeat``: B copies of the image (the full trunk at batch B, as pytorch-grad-cam runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rtsal.engine.explainer import resolve_targets
from rtsal.methods.base import LayerTap, MethodOutput, MethodRunner, Target, chunks, record
from rtsal.types import LayerInfo

if TYPE_CHECKING:
    from rtsal.engine.explainer import Explainer

SMALL = 32  # input side for the "small" feed


def _format(t: Tensor) -> torch.memory_format:
    return (
        torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    )


class LayerVariants:
    """``scores(x1, a1, build, n, cls)``: the target logit for each of ``n`` variants of a layer output."""

    def __init__(self, model: nn.Module, layer: LayerInfo) -> None:
        self.model = model
        self.layer = layer
        self.mode: str | None = None  # "expand", "small" or "repeat" once found

    @torch.inference_mode()
    def scores(self, x1: Tensor, a1: Tensor, build: Callable[[Tensor], Tensor], n: int, cls: int) -> Tensor:
        """The target logit for each variant. x1 (1, 3, H, W) the image, a1 (1, C, h, w) its layer output;
        ``build(a1)`` makes the (n, C, h, w) variants. -> (n,)."""
        if self.mode is None:
            self.mode = self._find_mode(x1, a1)
        return self._run(self._feed(x1, n), lambda _: build(a1), n)[:, cls].float()

    def _feed(self, x1: Tensor, n: int) -> Tensor:
        if self.mode == "expand":
            return x1
        if self.mode == "small":
            return torch.zeros(n, 3, SMALL, SMALL, device=x1.device).contiguous(memory_format=_format(x1))
        return x1.expand(n, -1, -1, -1).contiguous(memory_format=_format(x1))

    def _run(self, feed: Tensor, fn: Callable[[Tensor], Tensor], n: int) -> Tensor:
        def checked(out: Tensor) -> Tensor:
            variants = fn(out)
            if variants.shape[0] != n:
                raise ValueError(f"built {variants.shape[0]} variants, expected {n}")
            return variants

        with LayerTap(self.model, self.layer, checked):
            logits = self.model(feed)
        if logits.dim() != 2 or logits.shape[0] != n:
            raise RuntimeError(f"expected logits for {n} variants, got shape {tuple(logits.shape)}")
        return logits

    def _find_mode(self, x1: Tensor, a1: Tensor) -> str:
        """Try the cheap feeds on two unmodified copies of the layer output; keep the first that is right."""
        true = self.model(x1)
        tol = 1e-3 * float(true.abs().max()) + 1e-4
        for mode in ("expand", "small"):
            self.mode = mode
            try:
                got = self._run(self._feed(x1, 2), lambda _: repeat(a1, 2), 2)
            except (RuntimeError, ValueError):
                continue
            if torch.allclose(got, true.expand(2, -1), rtol=1e-3, atol=tol):
                return mode
        return "repeat"


def repeat(a: Tensor, n: int) -> Tensor:
    """n writable copies of a (1, C, h, w) activation, in its memory format. -> (n, C, h, w)."""
    fmt = _format(a)
    return a.expand(n, -1, -1, -1).contiguous(memory_format=fmt).clone(memory_format=fmt)


def score_drops(
    variants: LayerVariants,
    x1: Tensor,
    a1: Tensor,
    cls: int,
    base: float,
    batch_size: int,
    count: int,
    zero: Callable[[Tensor, Tensor], None],
) -> Tensor:
    """The drop of the target logit for each of ``count`` ablations of a layer output, in batches.

    x1 (1, 3, H, W) the image, a1 (1, C, h, w) its layer output, ``base`` the unablated logit of class
    ``cls``; ``zero(v, idx)`` zeroes ablation ``idx[i]`` in variant ``v[i]`` in place. -> (count,)."""
    out = []
    for start, stop in chunks(count, batch_size):
        idx = torch.arange(start, stop, device=a1.device)

        def build(a: Tensor, idx: Tensor = idx) -> Tensor:
            v = repeat(a, len(idx))
            zero(v, idx)
            return v

        out.append(base - variants.scores(x1, a1, build, len(idx), cls))
    return torch.cat(out)


class AblationRunner(MethodRunner):
    """A method that ablates parts of ``layer``'s output image by image: :meth:`image_map` turns one image's
    layer output into its raw map."""

    def __init__(self, explainer: Explainer, method: str, **kwargs: Any) -> None:
        super().__init__(explainer, method, **kwargs)
        self.variants = LayerVariants(explainer.model, self.layer)

    def image_map(self, x1: Tensor, a1: Tensor, cls: int, base: float) -> Tensor:
        """One image: x1 (1, 3, H, W), a1 (1, C, h, w) -> raw map (h, w)."""
        raise NotImplementedError

    def compute(self, x: Tensor, target: Target) -> MethodOutput:
        keep: list[Tensor] = []
        logits, ms = self.first_forward(x, record(self.explainer.model, self.layer, keep))
        a = keep[0]
        self.layer_shape = (a.shape[1], a.shape[2], a.shape[3])
        tgt = resolve_targets(logits, target)
        with torch.inference_mode():
            maps = [
                self.image_map(x[n : n + 1], a[n : n + 1], int(tgt[n]), float(logits[n, int(tgt[n])]))
                for n in range(x.shape[0])
            ]
        return MethodOutput(logits, tgt, torch.stack(maps), forward_ms=ms)
