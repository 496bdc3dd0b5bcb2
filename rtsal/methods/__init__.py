"""The comparison methods: ``build_runner`` gives a runner for any method in :mod:`rtsal.names`
(torch-free at import)."""

from __future__ import annotations

from typing import Any

from rtsal.names import (  # re-exported: the method registry is rtsal.names, torch-free
    CAMS,
    COSTS,
    ENGINE_METHODS,
    METHODS,
    NORMS,
    STATISTICS,
    WEIGHT_PRESETS,
    MethodInfo,
    register_method,
)

__all__ = [
    "CAMS",
    "COSTS",
    "ENGINE_METHODS",
    "METHODS",
    "NORMS",
    "STATISTICS",
    "WEIGHT_PRESETS",
    "MethodInfo",
    "build_runner",
    "register_method",
]


def build_runner(
    name: str,
    explainer: Any,
    *,
    layer: str | None = None,
    cskip: int = 16,
    batch_size: int | None = None,
    close_explainer: bool | None = None,
    **explainer_options: Any,
) -> Any:
    """A runner for method ``name``: a context manager with ``explain(images, target=None) -> SaliencyResult``
    and a ``cost`` string. ``explainer`` is an ``Explainer`` or a model name / ``nn.Module`` (then built with
    ``explainer_options`` and closed with the runner). ``layer`` (``NAME`` or ``NAME#CALL``, default the last
    scale-end layer), ``cskip`` (Score-CAM channels, 0 = all) and ``batch_size`` apply to the comparison
    methods. Imports torch; see :func:`rtsal.methods.runner.build_runner`.
    """
    from rtsal.methods.runner import build_runner as build

    return build(
        name,
        explainer,
        layer=layer,
        cskip=cskip,
        batch_size=batch_size,
        close_explainer=close_explainer,
        **explainer_options,
    )
