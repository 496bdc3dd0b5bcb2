"""Weights files: a state dict saved with ``torch.save`` (read with ``weights_only=True``) or a safetensors
file, loaded strictly, with one readable error for a file that is not one or belongs to another model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from rtsal.errors import ModelError, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["apply_state_dict", "load_state_dict_file"]

_SAFETENSORS_SUFFIXES = (".safetensors", ".st")


def _is_safetensors(p: Path) -> bool:
    """A safetensors file: by its suffix, or by its header (8-byte length, then a JSON object)."""
    if p.suffix.lower() in _SAFETENSORS_SUFFIXES:
        return True
    with p.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < p.stat().st_size


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UsageError(f"{p} is a safetensors file: pip install safetensors (or 'rtsal[timm]')") from None
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, a truncated header
        first = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ModelError(f"not a safetensors weights file: {p} ({first})") from None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``torch.save`` file (never unpickling arbitrary objects) or a safetensors
    file. Accepts a bare state dict or a checkpoint holding one under ``state_dict``, ``model`` or
    ``state_dict_ema``.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}")
    if _is_safetensors(p):
        obj: object = _read_safetensors(p)
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # the weights-only unpickler raises many types for a file that is not one
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"not a PyTorch weights file: {p} ({first[:120]})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"not a state dict of tensors: {p}")
    bad = [k for k, v in obj.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = " and more" if bad[1:] else ""
        raise ModelError(f"weights file {p} holds NaN or infinite values (in {bad[0]}{more})")
    return obj


def apply_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, turning a mismatch (weights of another architecture) into one ModelError."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(
            f"weights in {source} do not fit this model (another architecture?): {detail}"
        ) from None
