"""The ``temporal`` section of ``rtsal eval``: how steady each method's maps are over consecutive video
frames, and how faithful they stay, side by side.

For each video input, the first ``frames`` consecutive frames are explained by every method of the table
(engine methods, comparison methods, the random and centre reference maps) and by the live overlay's
temporal smoothing (``fastcam+smoothW``: the ``--smooth W`` exponential average of the ``fastcam`` maps, the
same :class:`rtsal.render.smooth.MapSmoother` the overlay runs). Per method:

- **steadiness**: the warping error of each consecutive pair (:mod:`rtsal.eval.temporal`; flow on the
  model-input images the maps belong to), mean and 95% t-interval over the pairs of all clips, and the
  fraction of pixels the forward-backward check kept;
- **faithfulness**: the normalised insertion minus deletion AUC (as the main table) on every ``stride``-th
  frame of the window after the first, so a smoothed map is scored on the frame it is shown over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rtsal.errors import VideoIOError
from rtsal.eval.methods import MethodSpec

__all__ = ["DEFAULT_FRAMES", "DEFAULT_SMOOTH", "smooth_label", "temporal_section"]

DEFAULT_FRAMES = 32
DEFAULT_SMOOTH = (0.5, 0.8)
SCORED_FRAMES = 6  # frames per clip scored for faithfulness


def smooth_label(weight: float) -> str:
    return f"fastcam+smooth{weight:g}"


def _clip_frames(path: Path, n: int) -> list[Any]:
    from rtsal.io.video import VideoReader

    out = []
    with VideoReader(path) as reader:
        for frame in reader:
            out.append(frame.image)
            if len(out) >= n:
                break
    if len(out) < 2:
        raise VideoIOError(f"{path}: the temporal section needs at least 2 frames, got {len(out)}")
    return out


def _image_of(x: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """A preprocessed (1, 3, h, w) tensor -> the RGB uint8 (h, w, 3) image the model saw."""
    import numpy as np
    import torch

    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    rgb = (x[0].float().cpu() * s + m).clamp(0, 1).permute(1, 2, 0).numpy()
    return (rgb * 255 + 0.5).astype(np.uint8)


def temporal_section(
    config: Any,
    specs: Sequence[MethodSpec],
    clips: Sequence[Path],
    *,
    frames: int = DEFAULT_FRAMES,
    smooth: Sequence[float] = DEFAULT_SMOOTH,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Steadiness and faithfulness of every method (and smoothing weight) over ``frames`` consecutive
    frames of each clip; the JSON-able ``temporal`` section of the eval report."""
    import numpy as np
    import torch

    from rtsal.engine.explainer import Explainer
    from rtsal.eval import metrics as ev
    from rtsal.eval.run import FIELD, comparison_maps, config_baseline
    from rtsal.eval.stats import mean_ci  # numpy: not at import (`rtsal --help` stays light)
    from rtsal.eval.temporal import DEFAULT_FLOW, TemporalMeter
    from rtsal.render.smooth import MapSmoother

    settings = dict(
        model=config.model,
        weights=config.weights,
        device=config.device,
        size=config.size,
        layers=list(config.layers) if config.layers else None,
    )
    labels = [s.label for s in specs]
    has_fastcam = any(s.label == "fastcam" for s in specs)
    rows = labels + ([smooth_label(w) for w in smooth] if has_fastcam else [])
    errors: dict[str, list[float]] = {r: [] for r in rows}
    valid: dict[str, list[float]] = {r: [] for r in rows}
    faithful: dict[str, list[float]] = {r: [] for r in rows}
    used: list[dict[str, Any]] = []
    with Explainer(**settings) as main:
        module = main.model
        mean, std = main.mean, main.std
        common = dict(
            mean=main.mean,
            std=main.std,
            class_names=main.class_names,
            layers=[i.label for i in main.layers],
            device=config.device,
            channels_last=main.channels_last,
        )
        channels_last = main.channels_last

        def model(batch: torch.Tensor) -> torch.Tensor:
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return module(batch)

        for clip in clips:
            images = _clip_frames(clip, frames)
            xs = [main.preprocess(im) for im in images]
            maps: dict[str, list[torch.Tensor]] = {r: [] for r in rows}
            targets = []
            smoothers = {w: MapSmoother(w) for w in smooth}
            for x in xs:
                r = main.explain(x)
                targets.append(int(r.target[0]))
                for w, sm in smoothers.items():
                    if has_fastcam:
                        one = sm(r, ("fused",))
                        maps[smooth_label(w)].append(one.fused[0].float().cpu())
            groups: dict[tuple[str, str, str, str], list[MethodSpec]] = {}
            for s in specs:
                if s.kind == "engine":
                    groups.setdefault(s.group, []).append(s)
            for group, members in groups.items():
                cam, norm, weights, statistic = group
                with Explainer(
                    module,
                    method="fastcam",
                    cam=cam,
                    norm=norm,
                    layer_weights=weights,
                    statistic=statistic,
                    **common,
                ) as ex:
                    for x, t in zip(xs, targets, strict=True):
                        r = ex.explain(x, target=t)
                        for s in members:
                            maps[s.label].append(getattr(r, FIELD[s.method])[0].float().cpu())
            for s in specs:
                if s.kind == "comparison":
                    log(f"temporal: computing {s.label} maps on {len(xs)} frames of {clip.name}")
                    maps[s.label] = comparison_maps(s.method, module, common, xs, targets, config.cskip)[0]
                elif s.kind == "baseline":
                    size = tuple(xs[0].shape[-2:])
                    maps[s.label] = [
                        ev.random_map(size, seed=config.seed * 7919 + 100_003 + i)
                        if s.method == "random"
                        else ev.centre_map(size)
                        for i in range(len(xs))
                    ]
            seen = [_image_of(x, mean, std) for x in xs]
            for row in rows:
                meter = TemporalMeter(DEFAULT_FLOW)
                for im, m in zip(seen, maps[row], strict=True):
                    step = meter(im, np.asarray(m.numpy(), dtype=np.float32))
                    if step is not None:
                        valid[row].append(step.valid)
                        if math.isfinite(step.error):
                            errors[row].append(step.error)
            stride = max(1, (len(xs) - 1) // SCORED_FRAMES)
            for i in range(1, len(xs), stride):
                x = xs[i].float().contiguous()
                base = config_baseline(x, config, mean, std, i)
                stack = torch.stack([maps[row][i] for row in rows]).to(x.device)
                sc = ev.score_maps(
                    model, x, base, stack, targets[i], config.steps, config.batch_size, config.seed
                )
                for j, row in enumerate(rows):
                    faithful[row].append(float(sc.n_ins_minus_del[j]))
            used.append({"clip": str(clip), "frames": len(xs), "pairs": len(xs) - 1})
            log(f"temporal: {clip.name}: {len(xs)} frames, {len(rows)} maps each")

    out: dict[str, Any] = {}
    for row in rows:
        kind = "smoothed" if row not in labels else next(s.kind for s in specs if s.label == row)
        e_mean, e_half = mean_ci(errors[row]) if errors[row] else (math.nan, math.nan)
        f_mean, f_half = mean_ci(faithful[row]) if faithful[row] else (math.nan, math.nan)
        out[row] = {
            "kind": kind,
            "warp_error": {
                "mean": _num(e_mean),
                "ci95": _num(e_half),
                "n": len(errors[row]),
                "values": errors[row],
            },
            "valid": float(np.mean(valid[row])) if valid[row] else None,
            "n_ins_minus_del": {
                "mean": _num(f_mean),
                "ci95": _num(f_half),
                "n": len(faithful[row]),
                "values": faithful[row],
            },
        }
    return {"flow": DEFAULT_FLOW, "frames": frames, "smooth": list(smooth), "clips": used, "methods": out}


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)
