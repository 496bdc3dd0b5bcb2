"""``rtsal layers MODEL``: the scale-end layers rtsal hooks, found by a dry-run probe."""

from __future__ import annotations

import argparse

from rtsal.models import MODELS


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "layers",
        help="print a model's scale-end layers",
        description="Print the scale-end layers of a model (name, channels, stride, size at 224).",
    )
    p.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(MODELS)}")
    p.add_argument(
        "--layers", default=None, metavar="NAME,NAME,...", help="check explicit layer names instead"
    )
    return p


def run(args: argparse.Namespace) -> int:
    from rtsal.engine.kinds import probe_model
    from rtsal.models import load_model

    loaded = load_model(args.model, weights=None)  # the architecture is all the probe needs
    layers = args.layers.split(",") if args.layers else loaded.layers
    info = probe_model(loaded.module, loaded.kind, layers, loaded.size or 224, loaded.min_frames or 1)
    print(format_layers(args.model, info))
    if loaded.kind != "image":
        print(KIND_NOTES[loaded.kind])
    return 0


KIND_NOTES = {
    "clip": "clip model: activations (N, C, T, h, w); stride and size are spatial, maps come per frame",
    "vit": "ViT: every block has one resolution, so the scales are blocks at several depths (class token "
    "dropped); the last is block 11's input: after it only the class token reaches the head",
    "swin": "Swin: the four stages (channels-last tokens) are the scales",
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
