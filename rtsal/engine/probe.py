"""Find the scale-end layers of a backbone by a dry-run probe of output shapes.

A scale-end layer is the last module output at each spatial resolution below the input's, in execution
order. An output inside a module that takes that resolution in and gives another out does not count (the
expansion convolution inside a strided block is not a scale end; the block is). The probe input is not
square, so outputs whose height and width do not shrink by the same stride (channels-last permutes,
fixed-size adaptive pools, 1x1 pooled vectors) are not taken for spatial maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rtsal.errors import UsageError
from rtsal.types import LayerInfo


@dataclass
class _Call:
    name: str
    call: int
    parents: list[int]  # indices of enclosing calls
    in_shape: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    negative: bool = False
    finish: int = -1  # position in the order the calls returned


@dataclass(frozen=True)
class Probe:
    """What one dry run found: the scale-end layers, the class count, and the linear head if there is one."""

    layers: tuple[LayerInfo, ...]
    num_classes: int
    linear_head: str | None  # name of an nn.Linear with logits == linear(GAP(last scale)), if one exists


def parse_layer(spec: str) -> tuple[str, int]:
    """``"name"`` or ``"name#k"`` (the k-th call of a module used more than once) -> (name, k)."""
    name, _, call = spec.partition("#")
    if call and not call.isdigit():
        raise UsageError(f"bad layer {spec!r}: use NAME or NAME#CALL with CALL a number")
    return name, int(call or 0)


@torch.no_grad()
def probe(
    model: nn.Module,
    layers: Sequence[str] | None = None,
    size: tuple[int, int] = (224, 320),
    frames: int | None = None,
) -> Probe:
    """Run one forward pass of a random (1, 3, *size) input, record every module output, pick scale ends.

    ``layers`` names them explicitly instead (``NAME`` or ``NAME#CALL``). The model's train/eval mode is
    restored afterwards and no hook is left behind. A model that only takes square inputs is probed at 224.
    With ``frames`` the model is a clip model: the input is (1, 3, frames, *size), activations are
    (N, C, T, h, w) and scales are told apart by their spatial size (h, w).
    """
    try:
        return _probe(model, layers, size, frames)
    except RuntimeError:
        if size[0] == size[1]:
            raise
        return _probe(model, layers, (224, 224), frames)


def _probe(
    model: nn.Module, layers: Sequence[str] | None, size: tuple[int, int], frames: int | None
) -> Probe:
    h, w = size
    rank = 4 if frames is None else 5
    lead = () if frames is None else (frames,)
    named = dict(model.named_modules())
    if layers is not None:
        unknown = [s for s in layers if parse_layer(s)[0] not in named or parse_layer(s)[0] == ""]
        if unknown:
            raise UsageError(f"no module named {unknown[0]!r} in the model (see `rtsal layers MODEL`)")
    calls: list[_Call] = []
    stack: list[int] = []
    counts: dict[str, int] = {}
    finished = [0]
    handles = []

    def pre(name: str):
        def hook(module, args):
            idx = len(calls)
            x = args[0] if args else None
            in_shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
            calls.append(_Call(name, counts.get(name, 0), list(stack), in_shape))
            counts[name] = counts.get(name, 0) + 1
            stack.append(idx)

        return hook

    def post(name: str):
        def hook(module, args, out):
            idx = stack.pop()
            calls[idx].finish = finished[0]
            finished[0] += 1
            if isinstance(out, torch.Tensor):
                calls[idx].shape = tuple(out.shape)
                calls[idx].negative = bool(out.dim() == rank and out.numel() and out.amin() < 0)

        return hook

    was_training = model.training
    model.eval()
    try:
        for name, module in named.items():
            if name == "":
                continue
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name)))
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        logits = model(torch.rand(1, 3, *lead, h, w, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise UsageError("the model must return logits of shape (N, classes)")

    def spatial(c: _Call) -> tuple[int, int] | None:
        if c.shape is None or len(c.shape) != rank:
            return None
        return c.shape[-2], c.shape[-1]

    def is_scale(hw: tuple[int, int] | None) -> bool:
        if hw is None or hw[0] >= h or hw == (1, 1):
            return False
        sh, sw = h / hw[0], w / hw[1]
        return abs(sh - sw) <= 0.05 * max(sh, sw)

    def inside_transition(c: _Call, hw: tuple[int, int]) -> bool:
        for p in c.parents:
            parent = calls[p]
            p_out, p_in = spatial(parent), parent.in_shape
            if p_out is not None and p_out != hw and p_in is not None and len(p_in) == rank \
                    and p_in[-2:] == hw:
                return True
        return False

    if layers is not None:
        chosen = []
        for spec in layers:
            name, k = parse_layer(spec)
            match = [c for c in calls if c.name == name and c.call == k]
            if not match or spatial(match[0]) is None:
                raise UsageError(
                    f"layer {spec!r} does not output an {_SHAPES[rank]} tensor in one forward pass"
                )
            chosen.append(match[0])
    else:
        last: dict[tuple[int, int], _Call] = {}
        order: list[tuple[int, int]] = []
        for c in sorted(calls, key=lambda c: c.finish):
            hw = spatial(c)
            if not is_scale(hw) or inside_transition(c, hw):
                continue
            if hw not in last:
                order.append(hw)
            last[hw] = c
        chosen = [last[hw] for hw in order]
    infos = tuple(
        LayerInfo(
            name=c.name,
            call=c.call,
            channels=c.shape[1],
            stride=max(1, round(h / c.shape[-2])),
            size=(-(-224 // max(1, round(h / c.shape[-2]))),) * 2,
            relu=c.negative,
        )
        for c in chosen
    )
    if not infos:
        raise UsageError(f"found no module with a spatial {_SHAPES[rank]} output: is this a CNN classifier?")
    head = _find_linear_head(model, infos[-1], logits.shape[1], size=(*lead, h, w))
    return Probe(infos, int(logits.shape[1]), head)


_SHAPES = {4: "(N, C, H, W)", 5: "(N, C, T, H, W)"}


def _find_linear_head(
    model: nn.Module, last: LayerInfo, num_classes: int, size: tuple[int, ...]
) -> str | None:
    """The name of an ``nn.Linear`` such that logits == linear(mean_ij(A_last)), checked numerically."""
    candidates = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.in_features == last.channels and m.out_features == num_classes
    ]
    if not candidates:
        return None
    from rtsal.engine.hooks import ActivationRecorder

    x = torch.rand(2, 3, *size, device=next(model.parameters()).device)
    with ActivationRecorder(model, [last]) as rec:
        logits = model(x)
        (a,) = rec.pop()
    if last.relu:
        a = torch.relu(a)
    pooled = a.flatten(2).mean(dim=2)
    for name, lin in candidates:
        if torch.allclose(lin(pooled), logits, rtol=1e-4, atol=1e-4 * float(logits.abs().max()) + 1e-5):
            return name
    return None
