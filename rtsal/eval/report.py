"""What ``rtsal eval`` shows and writes: the table, the verdict lines, the JSON and the curves plot.

Everything reads the report dict of :func:`rtsal.eval.run.evaluate`; files go through :mod:`rtsal.outputs`
(temporary file beside the final path, moved into place when complete).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rtsal.errors import VideoIOError
from rtsal.outputs import AtomicPath, atomic_write_text

__all__ = [
    "MAX_ALL_PAIRS",
    "format_table",
    "format_temporal",
    "format_verdicts",
    "plot_curves",
    "verdict_lines",
    "write_json",
]

MAX_ALL_PAIRS = 8  # up to this many rows every pair gets a verdict; beyond it, each row against --against
TITLES = {
    "ins_minus_del": "raw ins - del",
    "n_ins_minus_del": "normalised ins - del",
}


def _describe_inputs(report: dict[str, Any]) -> str:
    inputs = report.get("inputs") or [{"clip": None} for _ in report["images"]]
    photos = sum(1 for i in inputs if i["clip"] is None)
    clips = {i["clip"] for i in inputs if i["clip"] is not None}
    frames = len(inputs) - photos
    parts = [f"{photos} photo{'s' if photos != 1 else ''}"] if photos else []
    if frames:
        parts.append(f"{frames} frames of {len(clips)} clip{'s' if len(clips) != 1 else ''}")
    return " + ".join(parts) or "0 images"


def format_table(report: dict[str, Any]) -> str:
    """One row per method, mean +- 95% t-interval half-width over the images. The paired column is each
    row's normalised ins - del minus the ``against`` row's, image by image: mean [95% bootstrap interval]
    (images where it is higher); pointing is hits out of the images with a box."""
    st = report["settings"]
    against = st["against"]
    cols = [
        ("ins_minus_del", "ins - del ^", "{:.3f}"),
        ("n_ins_minus_del", "norm ins - del ^", "{:.3f}"),
        ("paired", f"norm vs {against} ^ (wins)", "paired"),
        ("insertion", "ins ^", "{:.3f}"),
        ("deletion", "del v", "{:.3f}"),
        ("n_insertion", "norm ins ^", "{:.3f}"),
        ("n_deletion", "norm del v", "{:.3f}"),
        ("drop", "avg drop % v", "{:.1f}"),
        ("increase", "increase % ^", "{:.0f}"),
        ("pointing", "pointing ^", "hits"),
    ]
    methods = report["methods"]
    width = max(8, *(len(k) for k in methods))
    n_box = max((m["pointing"]["n"] for m in methods.values()), default=0)
    if n_box == 0:
        cols = cols[:-1]

    def cell(entry: dict[str, Any], key: str, fmt: str) -> str:
        if key == "paired":
            d = entry["paired"].get("n_ins_minus_del")
            if d is None:
                return "-"
            return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ({d['wins']}/{d['n']})"
        e = entry[key]
        if e["mean"] is None:
            return "-"
        if fmt == "hits":  # a count out of the images with a box
            return f"{round(e['mean'] * e['n'] / 100)}/{e['n']}"
        half = "" if e["ci95"] is None else " +- " + fmt.format(e["ci95"])
        return fmt.format(e["mean"]) + half

    cells = {k: [cell(m, key, fmt) for key, _, fmt in cols] for k, m in methods.items()}
    widths = [max(len(title), *(len(c[i]) for c in cells.values())) for i, (_, title, _) in enumerate(cols)]
    substrate = st["baseline"] + (f" (sigma {st['blur']:g} x short side)" if st["baseline"] == "blur" else "")
    lines = [
        f"{report['model']}: {_describe_inputs(report)}, {st['steps']} steps, {substrate} substrate; "
        "mean +- 95% interval (^ higher is better, v lower is better); norm = curves / intact-image "
        "probability, clipped to [0, 1]" + (f"; pointing on {n_box} photo(s) with boxes" if n_box else ""),
        "  ".join(["method".ljust(width)] + [t.rjust(w) for (_, t, _), w in zip(cols, widths, strict=True)]),
    ]
    for k, row in cells.items():
        lines.append("  ".join([k.ljust(width)] + [c.rjust(w) for c, w in zip(row, widths, strict=True)]))
    return "\n".join(lines)


def format_temporal(report: dict[str, Any]) -> str:
    """The ``temporal`` section as a table: per method the warping error between consecutive frames (mean
    +- 95% interval over the frame pairs; lower is steadier), the pixels the flow check kept, and the
    normalised ins - del on frames of the same window (higher is more faithful)."""
    t = report.get("temporal")
    if not t:
        return ""
    methods = t["methods"]
    pairs = sum(c["pairs"] for c in t["clips"])
    width = max(8, *(len(k) for k in methods))

    def pm(e: dict[str, Any], fmt: str) -> str:
        if e["mean"] is None:
            return "-"
        return fmt.format(e["mean"]) + ("" if e["ci95"] is None else " +- " + fmt.format(e["ci95"]))

    head = ["method".ljust(width), "warp error v".rjust(18), "kept %".rjust(7), "norm ins - del ^".rjust(17)]
    lines = [
        f"temporal stability: {len(t['clips'])} clip(s), {pairs} consecutive frame pairs (first "
        f"{t['frames']} frames of each; flow: {t['flow']}, forward-backward check); faithfulness on "
        f"{max(m['n_ins_minus_del']['n'] for m in methods.values())} of those frames",
        "  ".join(head),
    ]
    for k, m in methods.items():
        kept = "-" if m["valid"] is None else f"{100 * m['valid']:.1f}"
        lines.append("  ".join([
            k.ljust(width), pm(m["warp_error"], "{:.4f}").rjust(18), kept.rjust(7),
            pm(m["n_ins_minus_del"], "{:.3f}").rjust(17),
        ]))
    return "\n".join(lines)


def verdict_lines(report: dict[str, Any], measure: str = "n_ins_minus_del") -> list[str]:
    """One line per pair of methods on ``measure``: ``a > b`` / ``a < b`` when the 95% bootstrap interval of
    the paired difference excludes 0, ``a ~ b`` when it does not. Every pair up to ``MAX_ALL_PAIRS`` rows;
    beyond that, each row against the ``--against`` row."""
    from rtsal.eval.stats import PairedDifference

    against = report["settings"]["against"]
    many = len(report["methods"]) > MAX_ALL_PAIRS
    lines = []
    for d in report["pairs"][measure]:
        if many and against not in (d["a"], d["b"]):
            continue
        fields = {k: v for k, v in d.items() if k != "verdict"}
        lines.append(PairedDifference(**fields).line())
    return lines


def format_verdicts(report: dict[str, Any]) -> str:
    """The verdict lines of both paired measures, headline first, each under a title."""
    headline = report["settings"].get("headline", "n_ins_minus_del")
    measures = [headline] + [m for m in report["pairs"] if m != headline]
    n = len(report["images"])
    blocks = []
    for measure in measures:
        title = (
            f"{TITLES.get(measure, measure)}{' (headline)' if measure == headline else ''}, paired over {n} "
            "images: mean difference [95% bootstrap interval], images won"
        )
        blocks.append("\n".join([title, *("  " + line for line in verdict_lines(report, measure))]))
    return "\n\n".join(blocks)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """The report as JSON, written atomically."""
    return atomic_write_text(path, json.dumps(report, indent=1))


def plot_curves(report: dict[str, Any], path: str | Path) -> Path:
    """Mean deletion and insertion curves of every method, raw (top) and normalised (bottom), to a PNG,
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = report["fractions"]
    normalised = all("n_deletion" in m["curves"] for m in report["methods"].values())
    rows = (("", "probability of the predicted class"),) + (
        (("n_", "fraction of the intact image's probability"),) if normalised else ()
    )
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4.2 * len(rows)), sharey="row", squeeze=False)
    for r, (prefix, ylabel) in enumerate(rows):
        for label, m in report["methods"].items():
            style = (
                {"linestyle": "--", "color": "grey" if label == "random" else "black"}
                if m["kind"] == "baseline"
                else {}
            )
            for ax, key in zip(axes[r], ("deletion", "insertion"), strict=True):
                auc = m[prefix + key]["mean"]
                ax.plot(x, m["curves"][prefix + key], label=f"{label} ({auc:.3f})", **style)
        for ax, key, verb in zip(axes[r], ("deletion", "insertion"), ("removed", "revealed"), strict=True):
            better = "lower" if key == "deletion" else "higher"
            ax.set_title(f"{'normalised ' if prefix else ''}{key} (AUC in the legend; {better} is better)")
            ax.set_xlabel(f"fraction of pixels {verb}, most salient first")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[r][0].set_ylabel(ylabel)
    substrate = report["settings"].get("baseline", "blur")
    fig.suptitle(f"{report['model']}, mean over {len(report['images'])} images, {substrate} substrate")
    fig.tight_layout()
    try:
        with AtomicPath(path) as out:
            fig.savefig(out.tmp, dpi=110)
            out.commit()
    except OSError as exc:
        raise VideoIOError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return Path(path)
