"""``FastCAMSpec``: the one frozen value that defines an explanation graph (torch-free).

Everything that changes what the graph computes is here, and nothing else: the model's identity and a hash
of its weights, the scale-end layers with their ReLU flags, the statistic, the norm, the scale weights, the
method, the CAM and how it is computed (closed form from a linear head or the head's gradient), the input
shape and the precision. The :class:`~rtsal.engine.explainer.Explainer` builds it once; every backend builds
from it (plus the module, where it needs one) and reads nothing else of the Explainer. It is the cache key
of compiled graphs (:meth:`key`) and the metadata written into exported files (:meth:`to_json`).

Example:
    >>> spec = FastCAMSpec(model="m", model_class="x.M", weights="0" * 32,
    ...                    layers=(("layer4", 0, False),), head_layer="fc")
    >>> FastCAMSpec.from_json(spec.to_json()) == spec
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FastCAMSpec", "PRECISIONS", "SPEC_VERSION", "weights_hash"]

SPEC_VERSION = 1  # bump when a field's meaning changes
# inference precision of a backend: f32 agrees with eager to 1e-3 and better; bf16: openvino, compiled; int8:
# openvino (NNCF), the first blocks kept f32 (docs/backends.md)
PRECISIONS = ("f32", "bf16", "int8")


@dataclass(frozen=True)
class FastCAMSpec:
    """What one explanation graph computes. ``layers``: ``(name, call, relu)`` per scale end, where
    ``relu`` says the output can be negative (ReLU before the statistic when the statistic needs a
    non-negative input, and before a closed-form CAM). ``head``: ``linear`` (closed-form CAM from the weights
    of ``head_layer``) or ``gradient`` (the head's gradient). ``size`` is the model input (h, w) and
    ``batch`` its N; ``None`` for a spec that is not tied to one input shape yet (see :meth:`for_input`)."""

    model: str
    model_class: str
    weights: str  # SHA-256 of the state dict, 32 hex digits
    layers: tuple[tuple[str, int, bool], ...]
    head_layer: str | None = None
    head: str = "linear"  # linear | gradient
    statistic: str = "smoe"
    norm: str = "gauss"
    layer_weights: tuple[float, ...] = ()
    method: str = "fastcam"
    cam: str = "gradcampp"
    topk: int = 5
    channels_last: bool = True
    size: tuple[int, int] | None = None
    batch: int | None = None
    precision: str = "f32"
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.head not in ("linear", "gradient"):
            raise ValueError(f"head must be 'linear' or 'gradient', got {self.head!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.head == "linear" and not self.head_layer:
            raise ValueError("a linear head needs head_layer")

    @property
    def shape(self) -> tuple[int, int, int, int] | None:
        """The graph's input (N, 3, h, w), or None when the spec holds no input shape."""
        if self.size is None or self.batch is None:
            return None
        return (self.batch, 3, *self.size)

    def for_input(self, shape: tuple[int, ...]) -> FastCAMSpec:
        """This spec for input ``shape`` = (N, 3, h, w)."""
        n, _, h, w = (int(v) for v in shape)
        return replace(self, batch=n, size=(h, w))

    def with_precision(self, precision: str) -> FastCAMSpec:
        return replace(self, precision=precision)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal specs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> FastCAMSpec:
        """The spec :meth:`to_json` wrote; ValueError for anything else (unknown or missing fields)."""
        data = json.loads(text) if isinstance(text, str) else dict(text)
        if not isinstance(data, dict):
            raise ValueError("a FastCAMSpec is a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown FastCAMSpec fields: {', '.join(sorted(unknown))}")
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise ValueError(f"FastCAMSpec version {data.get('version')} (this rtsal reads {SPEC_VERSION})")
        try:
            data["layers"] = tuple((str(n), int(c), bool(r)) for n, c, r in data["layers"])
            data["layer_weights"] = tuple(float(w) for w in data.get("layer_weights", ()))
            for key in ("size",):
                if data.get(key) is not None:
                    data[key] = tuple(int(v) for v in data[key])
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a FastCAMSpec: {exc}") from None

    def key(self, **extra: Any) -> str:
        """The cache key: SHA-256 of the canonical JSON with ``extra`` (backend, runtime version, CPU...)."""
        text = json.dumps({"spec": self.to_dict(), **extra}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def weights_hash(module: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every parameter and buffer of ``module``, 32 hex
    digits: the spec's ``weights`` (the memory format does not change it)."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()[:32]
