"""``rtsal layers MODEL``: the scale-end layers rtsal hooks, found by a dry-run probe."""

from __future__ import annotations

import argparse

from rtsal.commands.common import MODEL_HELP, add_model_options


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "layers",
        help="print a model's scale-end layers",
        description="Print the scale-end layers of a model (name, channels, stride, size at 224).",
    )
    p.add_argument("model_pos", metavar="MODEL", nargs="?", default=None, help=MODEL_HELP)
    add_model_options(p)
    p.set_defaults(weights="none")  # the architecture is all the probe needs; --weights default reads them
    p.add_argument(
        "--layers", default=None, metavar="NAME,NAME,...", help="check explicit layer names instead"
    )
    return p


def run(args: argparse.Namespace) -> int:
    from rtsal.commands.common import parse_weights
    from rtsal.engine.kinds import probe_model, resolve_kind
    from rtsal.models import load_model

    name = args.model_pos if args.model_pos is not None else args.model
    weights = parse_weights(args.weights)
    if weights is None:
        import torch

        torch.manual_seed(0)
    loaded = load_model(name, weights=weights)
    layers = args.layers.split(",") if args.layers else loaded.layers
    info = probe_model(loaded.module, loaded.kind, layers, loaded.size or 224, loaded.min_frames or 1,
                       loaded.candidates)
    kind = resolve_kind(loaded.kind, info)
    print(format_layers(name, info))
    print(format_config(loaded, info))
    if kind != "image":
        print(KIND_NOTES[kind])
    return 0


def format_config(loaded, info) -> str:
    """What the model's own configuration gave: input size, mean/std, interpolation, crop, class names."""
    size = info.input_size or loaded.size or 224
    size_text = f"{size[0]}x{size[1]} (fixed)" if isinstance(size, tuple) else f"short side {size}"
    crop = f", crop {loaded.crop_pct:.3g} (not applied: the whole frame is shown)" if loaded.crop_pct else ""
    names = loaded.class_names
    classes = f"{names[0]!r}..{names[-1]!r}" if names else "ImageNet's or class_<i>"
    return (f"input: {size_text}, mean {tuple(round(v, 4) for v in loaded.mean)}, std "
            f"{tuple(round(v, 4) for v in loaded.std)}, {loaded.interpolation}{crop}; classes {classes}; "
            f"from {loaded.source}")


KIND_NOTES = {
    "clip": "clip model: activations (N, C, T, h, w); stride and size are spatial, maps come per frame",
    "vit": "ViT: every block has one resolution, so the scales are blocks at several depths (class token "
    "dropped); the last is block 11's input: after it only the class token reaches the head",
    "swin": "Swin: the four stages (channels-last tokens) are the scales",
    "tokens": "token or channels-last scales read as grids (class/register tokens dropped); eager engine",
}


def format_layers(name: str, info) -> str:
    rows = [("layer", "channels", "stride", "size@224", "ReLU first")]
    for layer in info.layers:
        label = layer.label
        rows.append(
            (
                label,
                str(layer.channels),
                str(layer.stride),
                f"{layer.size[0]}x{layer.size[1]}",
                "yes" if layer.relu else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{name}: {len(info.layers)} scale-end layers, {info.num_classes} classes"]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    head = (
        f"closed form from the linear head `{info.linear_head}` (no autograd)"
        if info.linear_head
        else "autograd through the head only (the trunk builds no graph)"
    )
    lines.append(f"CAM: {head}")
    return "\n".join(lines)
