"""``EngineOptions``: the engine options of a command as one frozen, picklable value (torch-free).

Built once from the parsed arguments (:meth:`EngineOptions.from_args`) by the command, it is what
``commands.common.make_runner`` builds an engine from, and what ``rtsal batch`` sends to every Dask worker
(each builds its backend once from it), instead of an ``argparse.Namespace``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["EngineOptions"]


@dataclass(frozen=True)
class EngineOptions:
    """What ``--model``, ``--method``, the FastCAM settings, ``--backend``/``--precision``, ``--compile`` and
    the thread options say, with the command's defaults. ``compile_mode``: a graph built before the first
    call (True) or in the background; ``streams_n``: inference streams (resolved from ``--streams``)."""

    model: str = "efficientnet-lite0"
    weights: str = "default"
    method: str = "fastcam"
    cam: str = "gradcampp"
    norm: str = "gauss"
    layer_weights: str = "equal"
    statistic: str = "smoe"
    layers: str | None = None
    size: int | None = None
    target: int | None = None
    device: str = "cpu"
    target_layer: str | None = None
    cskip: int = 16
    backend: str = "auto"
    precision: str = "f32"
    onnx: str | None = None
    compile: bool = False
    compile_mode: bool | str = True
    cache_dir: str | None = None
    threads: int | None = None
    streams_n: int = 1
    clip_len: int | None = None
    clip_stride: int | None = None

    @classmethod
    def from_args(cls, args: Any) -> EngineOptions:
        """The options of parsed arguments (an ``argparse.Namespace``, a mapping or an EngineOptions);
        names a command does not have keep their defaults."""
        if isinstance(args, EngineOptions):
            return args
        get = args.get if isinstance(args, dict) else (lambda k, d: getattr(args, k, d))
        return cls(**{f.name: get(f.name, f.default) for f in fields(cls)})

    def replace(self, **changes: Any) -> EngineOptions:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
