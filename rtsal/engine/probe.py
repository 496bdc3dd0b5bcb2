"""Find the scale-end layers of a backbone by a dry-run probe of output shapes.

A scale-end layer is the last module output at each spatial resolution below the input's, in execution
order. An output inside a module that takes that resolution in and gives another out does not count (the
expansion convolution inside a strided block is not a scale end; the block is). The probe input is not
square, so outputs whose height and width do not shrink by the same stride (fixed-size adaptive pools,
1x1 pooled vectors) are not taken for spatial maps.

Three layouts are read as grids (:class:`Grid`): ``nchw`` (a CNN's maps), ``nhwc`` (channels-last stages:
timm's Swin, ConvNeXt's inner blocks) and ``tokens`` (N, prefix + h*w, C): a transformer's patch tokens
after ``prefix`` class, distillation or register tokens. Token candidates are the blocks of a block list
(children of an ``nn.Sequential`` or ``nn.ModuleList``) unless a library names the stages (``candidates``:
timm's ``feature_info``). Where every candidate has one resolution (ViT, DeiT, Mixer), the scales are
blocks at four depths, and the last is the deepest whose grid tokens reach the logits (after a ViT's last
block only the class token does). A model that takes only one input size (a fixed position embedding, a
window that must divide the map) is probed at its own square size, and so are token models (their token
count must not change with the frame's shape); :attr:`Probe.input_size` tells the engine to run at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rtsal.errors import UsageError
from rtsal.types import LayerInfo

__all__ = ["Grid", "Probe", "parse_layer", "probe"]

MAX_PREFIX = 16  # class + distillation + register tokens at most


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
class Grid:
    """How one layer's output becomes an (N, C, h, w) grid: ``nchw`` as it is, ``nhwc`` permuted, ``tokens``
    (N, prefix + h*w, C) with the first ``prefix`` tokens dropped and the rest reshaped row by row."""

    layout: str  # "nchw" | "nhwc" | "tokens"
    channels: int
    hw: tuple[int, int]
    prefix: int = 0


@dataclass(frozen=True)
class Probe:
    """What one dry run found: the scale-end layers, the class count, and the linear head if there is one."""

    layers: tuple[LayerInfo, ...]
    num_classes: int
    linear_head: str | None  # name of an nn.Linear with logits == linear(GAP(last scale)), if one exists
    grids: tuple[Grid, ...] = ()  # one per layer; empty: every layer is (N, C, h, w)
    input_size: tuple[int, int] | None = None  # the only size the model takes (run at it), else None

    @property
    def kind(self) -> str:
        """``image`` when every scale is an (N, C, h, w) map, else ``tokens`` (grids to convert)."""
        return "image" if all(g.layout == "nchw" for g in self.grids) else "tokens"


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
    *,
    candidates: Sequence[str] | None = None,
    fixed: tuple[int, int] | None = None,
    own: int | None = None,
) -> Probe:
    """Run one forward pass of a random (1, 3, *size) input, record every module output, pick scale ends.

    ``layers`` names them explicitly instead (``NAME`` or ``NAME#CALL``). ``candidates``: the modules a
    library names as stages, searched first. ``fixed``: the model takes only this (h, w). A model that
    fails at ``size`` is probed at its own square size (``own``, else the short side of ``size``), and so
    is one whose scales are tokens. The model's train/eval mode is restored and no hook is left behind.
    With ``frames`` the model is a clip model: the input is (1, 3, frames, *size), activations are
    (N, C, T, h, w) and scales are told apart by their spatial size (h, w).
    """
    if frames is not None:
        return _probe(model, layers, size, frames, None, square=False)
    if fixed is not None:
        return _probe(model, layers, fixed, None, candidates, square=True, input_size=fixed)
    side = own or min(size)
    try:
        found = _probe(model, layers, size, None, candidates, square=size[0] == size[1])
    except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as exc:
        if isinstance(exc, UsageError) and "logits" not in str(exc) and "found no" not in str(exc):
            raise
        if size[0] == size[1]:
            raise _model_error(exc) from None
        try:
            return _probe(model, layers, (side, side), None, candidates, square=True, input_size=(side, side))
        except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as exc2:
            if isinstance(exc2, UsageError):
                raise
            raise _model_error(exc2) from None
    if any(g.layout == "tokens" for g in found.grids) and size[0] != size[1]:
        # a token count that follows the frame's shape: run square (channels-last maps may follow it)
        return _probe(model, layers, (side, side), None, candidates, square=True, input_size=(side, side))
    return found


def _model_error(exc: BaseException) -> UsageError:
    text = " ".join(str(exc).split())[:160] or type(exc).__name__
    return UsageError(f"the model does not run on an image input: {type(exc).__name__}: {text}")


def _record(model: nn.Module, x: Tensor, rank: int) -> tuple[list[_Call], Tensor]:
    """One forward pass with a pre- and post-hook on every module: each call's shapes, nesting and order."""
    calls: list[_Call] = []
    stack: list[int] = []
    counts: dict[str, int] = {}
    finished = [0]
    handles = []

    def pre(name: str):
        def hook(module, args):
            idx = len(calls)
            a = args[0] if args else None
            in_shape = tuple(a.shape) if isinstance(a, Tensor) else None
            calls.append(_Call(name, counts.get(name, 0), list(stack), in_shape))
            counts[name] = counts.get(name, 0) + 1
            stack.append(idx)

        return hook

    def post(name: str):
        def hook(module, args, out):
            idx = stack.pop()
            calls[idx].finish = finished[0]
            finished[0] += 1
            if isinstance(out, Tensor) and out.is_floating_point():
                calls[idx].shape = tuple(out.shape)
                calls[idx].negative = bool(out.dim() in (3, rank) and out.numel() and out.amin() < 0)

        return hook

    was_training = model.training
    model.eval()
    try:
        for name, module in model.named_modules():
            if name == "":
                continue
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name)))
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return calls, logits


def _grid_of(shape: tuple[int, ...] | None, h: int, w: int, rank: int, square: bool) -> Grid | None:
    """The grid an output of ``shape`` is for an (h, w) input, or None when it is no spatial map."""
    if shape is None or shape[0] != 1:  # the probe's batch is 1: (N * patches, L, C) is no grid (MobileViT)
        return None

    def scale(gh: int, gw: int) -> bool:
        if gh >= h or (gh, gw) == (1, 1) or gh < 1 or gw < 1:
            return False
        sh, sw = h / gh, w / gw
        if abs(sh - sw) > 0.05 * max(sh, sw) or sh < 1.9:
            return False
        # a square input cannot tell a map from an attention matrix by its sides: the stride must be whole
        return not square or abs(sh - round(sh)) <= 0.1 * sh

    if len(shape) == rank and scale(shape[-2], shape[-1]):
        return Grid("nchw", shape[1], (shape[-2], shape[-1]))
    if rank == 4 and len(shape) == 4 and scale(shape[1], shape[2]):
        return Grid("nhwc", shape[3], (shape[1], shape[2]))
    if rank == 4 and len(shape) == 3 and shape[1] > 1 and shape[2] >= 8:
        length = shape[1]
        for s in range(2, 65):
            for gh, gw in ((-(-h // s), -(-w // s)), (h // s, w // s)):
                prefix = length - gh * gw
                if 0 <= prefix <= MAX_PREFIX and gh * gw > 1 and scale(gh, gw):
                    return Grid("tokens", shape[2], (gh, gw), prefix)
    return None


def _probe(
    model: nn.Module,
    layers: Sequence[str] | None,
    size: tuple[int, int],
    frames: int | None,
    candidates: Sequence[str] | None,
    square: bool,
    input_size: tuple[int, int] | None = None,
) -> Probe:
    h, w = size
    rank = 4 if frames is None else 5
    lead = () if frames is None else (frames,)
    named = dict(model.named_modules())
    if layers is not None:
        unknown = [s for s in layers if parse_layer(s)[0] not in named or parse_layer(s)[0] == ""]
        if unknown:
            raise UsageError(f"no module named {unknown[0]!r} in the model (see `rtsal layers MODEL`)")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    calls, logits = _record(model, torch.rand(1, 3, *lead, h, w, device=device), rank)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise UsageError("the model must return logits of shape (N, classes)")
    # padding layers grow a map by a pixel or two: a size that is no scale of the model
    pads = {n for n, m in named.items() if type(m).__name__.endswith(("Pad1d", "Pad2d", "Pad3d"))}
    grids = [None if c.name in pads else _grid_of(c.shape, h, w, rank, square) for c in calls]

    def inside_transition(i: int) -> bool:
        hw = grids[i].hw  # type: ignore[union-attr]
        for p in calls[i].parents:
            p_out, p_in = grids[p], _grid_of(calls[p].in_shape, h, w, rank, square)
            if p_out is not None and p_out.hw != hw and p_in is not None and p_in.hw == hw:
                return True
        return False

    if layers is not None:
        chosen = []
        for spec in layers:
            name, k = parse_layer(spec)
            match = [i for i, c in enumerate(calls) if c.name == name and c.call == k]
            if not match or grids[match[0]] is None:
                raise UsageError(
                    f"layer {spec!r} does not output an {_SHAPES[rank]} tensor (or a token grid) in one "
                    "forward pass"
                )
            chosen.append(match[0])
    else:
        chosen = []
        if candidates:
            wanted = set(candidates)
            pool = [i for i, c in enumerate(calls) if c.name in wanted and grids[i] is not None]
            chosen = _select(pool, calls, grids, model, logits, device, (*lead, h, w))
        if not chosen:
            blocks = _block_members(model)
            pool = [
                i for i, g in enumerate(grids)
                if g is not None and not inside_transition(i)
                and (g.layout != "tokens" or calls[i].name in blocks)
            ]
            token_hw = {grids[i].hw for i in pool if grids[i].layout == "tokens"}  # type: ignore[union-attr]
            # where a resolution has token blocks, they are its scale, not a convolution inside an
            # attention (CoaT's position encodings run (N, C, h, w) convolutions inside every block)
            pool = [i for i in pool if grids[i].hw not in token_hw or grids[i].layout == "tokens"]  # type: ignore
            chosen = _select(pool, calls, grids, model, logits, device, (*lead, h, w))
    if not chosen:
        raise UsageError(f"found no module with a spatial {_SHAPES[rank]} output: is this a CNN classifier?")
    infos = []
    for i in chosen:
        g = grids[i]
        stride = max(1, round(h / g.hw[0]))  # type: ignore[union-attr]
        tokens = g.layout != "nchw"  # type: ignore[union-attr]
        infos.append(LayerInfo(name=calls[i].name, call=calls[i].call, channels=g.channels,  # type: ignore
                               stride=stride, size=(-(-224 // stride),) * 2,
                               relu=calls[i].negative or tokens))
    found = tuple(grids[i] for i in chosen)
    head = None
    if all(g.layout == "nchw" for g in found):  # type: ignore[union-attr]
        head = _find_linear_head(model, infos[-1], logits.shape[1], size=(*lead, h, w))
    return Probe(tuple(infos), int(logits.shape[1]), head, found, input_size)  # type: ignore[arg-type]


_SHAPES = {4: "(N, C, H, W)", 5: "(N, C, T, H, W)"}
DEPTHS = 4  # scales taken from a model whose blocks share one resolution


def _block_members(model: nn.Module) -> set[str]:
    """Names of the modules that are children of a block list (``nn.Sequential``/``nn.ModuleList``)."""
    out = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) >= 2:
            out.update(f"{name}.{child}" if name else child for child, _ in module.named_children())
    return out


def _select(
    pool: list[int],
    calls: list[_Call],
    grids: list[Grid | None],
    model: nn.Module,
    logits: Tensor,
    device: torch.device,
    size: tuple[int, ...],
) -> list[int]:
    """The last call at each resolution (in the order calls return); blocks at several depths where there
    is one resolution; the last scale moved back to the deepest block whose grid tokens reach the logits."""
    pool = sorted(pool, key=lambda i: calls[i].finish)
    last: dict[tuple[int, int], int] = {}
    members: dict[tuple[int, int], list[int]] = {}
    order: list[tuple[int, int]] = []
    for i in pool:
        hw = grids[i].hw  # type: ignore[union-attr]
        if hw not in last:
            order.append(hw)
        last[hw] = i
        members.setdefault(hw, []).append(i)
    if not order:
        return []
    final = order[-1]
    if grids[last[final]].layout == "tokens":  # type: ignore[union-attr]
        # drop trailing blocks whose patch tokens no longer reach the logits (class-token heads)
        tail = members[final]
        while len(tail) > 1 and not _reaches_logits(model, calls[tail[-1]], grids[tail[-1]], size, device):
            tail = tail[:-1]
        members[final] = tail
        last[final] = tail[-1]
    if len(order) == 1:
        m = members[final]
        picks = sorted({m[max(0, round(len(m) * k / DEPTHS) - 1)] for k in range(1, DEPTHS + 1)})
        picks[-1] = m[-1]
        return sorted(set(picks), key=lambda i: calls[i].finish)
    return [last[hw] for hw in order]


@torch.no_grad()
def _reaches_logits(model: nn.Module, call: _Call, grid: Grid | None, size: tuple[int, ...],
                    device: torch.device) -> bool:
    """Whether the top logit has a non-zero gradient on the grid part of ``call``'s output."""
    module = dict(model.named_modules())[call.name]
    seen: list[Tensor] = []
    count = [0]

    def hook(mod, args, out):
        k = count[0]
        count[0] += 1
        if k != call.call or not isinstance(out, Tensor):
            return None
        leaf = out.detach().requires_grad_(True)
        seen.append(leaf)
        torch.set_grad_enabled(True)
        return leaf.clone()

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        logits = model(torch.rand(1, 3, *size, device=device))
        if not seen or not logits.requires_grad:
            return False
        (g,) = torch.autograd.grad(logits[0].max(), seen[0], allow_unused=True)
    finally:
        handle.remove()
        model.train(was_training)
    if g is None:
        return False
    if grid is not None and grid.layout == "tokens":
        g = g[:, grid.prefix:]
    return bool(g.abs().amax() > 0)


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
