"""Time saliency methods against a plain forward pass of the same model, interleaved in one loop.

Used by ``rtsal bench`` and ``benchmarks/methods.py``. Every method, rtsal's and the installed peers'
(pytorch-grad-cam, torchcam, captum), runs on the same preprocessed input; each of its calls is paired with
a plain ``inference_mode`` forward pass of a hook-free copy of the model, so machine load that drifts
during a long run hits both alike. The ratio is the median over those pairs of ``method / forward``.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rtsal.engine.explainer import Explainer
from rtsal.errors import RtsalError, UsageError
from rtsal.methods import METHODS, build_runner
from rtsal.models import load_model
from rtsal.types import LayerInfo

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam draws progress bars in ScoreCAM/AblationCAM


@dataclass
class Entry:
    """One method to time: ``run()`` explains the prepared input once."""

    name: str
    library: str
    run: Callable[[], object]
    passes: Callable[[], str]  # per image, read after the runs (some depend on the layer's shape)
    close: Callable[[], None] = lambda: None
    note: str = ""

    @property
    def label(self) -> str:
        """``library/name``, what ``--only``/``--skip`` match: "rtsal/fastcam", "torchcam/GradCAMpp"."""
        return f"{self.library}/{self.name}"


@dataclass(frozen=True)
class Timing:
    """What one method measured: milliseconds per call of the whole batch."""

    method: str
    library: str
    passes: str
    iters: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    forward_ms: float  # median of the plain forward passes interleaved with this method's calls
    ratio: float  # median over the pairs of (method ms / forward ms)
    first_call: bool = False  # slower than the budget: the one sample is the first (warm-up) call
    note: str = ""


@dataclass
class Setup:
    """The shared state of one benchmark: explainer (rtsal methods), clean model (forward, peers), input."""

    explainer: Explainer
    clean: nn.Module
    x: Tensor  # (N, 3, S, S) preprocessed
    layer: LayerInfo  # the layer the layer-based methods use
    peer_layer: str  # a module name the peers can hook (a shared module's later call cannot be)
    target: list[int]  # top-1 classes, for the peers that need one given
    notes: list[str] = field(default_factory=list)


def clock(device: torch.device) -> float:
    """``perf_counter`` after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def measure(
    entry: Entry,
    forward: Callable[[], object],
    device: torch.device,
    iters: int,
    warmup: int,
    budget_s: float,
) -> Timing:
    """Time ``entry.run`` and ``forward`` in pairs (which one runs first alternates).

    The first pair is a warm-up and gives an estimate; then ``min(iters, budget_s / estimate)`` pairs are
    timed (at least one). A method slower than the budget is not run again: its first call is the sample,
    compared with the median of that pair's forward pass and a few more.
    """

    def timed(fn: Callable[[], object]) -> float:
        t0 = clock(device)
        fn()
        return (clock(device) - t0) * 1e3

    first_fwd, first = timed(forward), timed(entry.run)
    pairs: list[tuple[float, float]] = []
    first_only = first > budget_s * 1e3
    if first_only:  # one sample; the forward it is compared with is the median of a few around it
        fwds = [first_fwd] + [timed(forward) for _ in range(max(2, min(iters, 10)))]
        pairs.append((statistics.median(fwds), first))
    else:
        n = max(1, min(iters, int(budget_s * 1e3 / (first + first_fwd))))
        for _ in range(max(0, min(warmup - 1, n))):
            forward()
            entry.run()
        for i in range(n):  # alternate which of the pair runs first
            if i % 2 == 0:
                f = timed(forward)
                pairs.append((f, timed(entry.run)))
            else:
                m = timed(entry.run)
                pairs.append((timed(forward), m))
    fwd = [p[0] for p in pairs]
    ms = [p[1] for p in pairs]
    med_f, med = statistics.median(fwd), statistics.median(ms)
    ratio = statistics.median(m / f for f, m in pairs)
    return Timing(
        method=entry.name,
        library=entry.library,
        passes=entry.passes(),
        iters=len(ms),
        median_ms=med,
        p10_ms=percentile(ms, 10),
        p90_ms=percentile(ms, 90),
        forward_ms=med_f,
        ratio=ratio,
        first_call=first_only,
        note=entry.note,
    )


# -- setting up ---------------------------------------------------------------------------------------------
def setup(
    model: str,
    weights: str | None,
    size: int,
    batch: int = 1,
    device: str = "cpu",
    layer: str | None = None,
    image: np.ndarray | None = None,
) -> Setup:
    """Build the explainer and a hook-free copy of its model with the same weights, and the input batch."""
    import cv2

    if size < 32:
        raise UsageError(f"--size must be at least 32, got {size}")
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, got {batch}")
    explainer = Explainer(model, weights=weights, device=device, size=(size, size))
    try:
        clean = load_model(model, None).module.to(explainer.device)
        clean.load_state_dict(explainer.model.state_dict())
        if explainer.channels_last:
            clean = clean.to(memory_format=torch.channels_last)
        clean.eval()
        if image is None:
            image = bundled_photo("coffee")
        frame = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        if explainer.kind == "clip":  # a clip of the model's length: the photo panning right
            n = explainer.clip_len or 16
            clip = np.stack([np.roll(frame, 2 * t, axis=1) for t in range(n)])
            x = explainer.preprocess(np.stack([clip] * batch))
        else:
            x = explainer.preprocess(np.stack([frame] * batch))
        last = explainer.layers[-1]
        chosen = LayerInfo(last.name, last.call) if layer is None else _parse(explainer.model, layer)
        peer_layer, note = peer_layer_for(clean, chosen, x)
        with torch.inference_mode():
            target = clean(x).argmax(dim=1).tolist()
    except BaseException:
        explainer.close()
        raise
    return Setup(explainer, clean, x, chosen, peer_layer, target, [note] if note else [])


def bundled_photo(name: str) -> np.ndarray:
    """One of the photographs shipped in ``rtsal/data`` (coffee, chelsea, rocket, astronaut), RGB uint8."""
    from pathlib import Path

    from rtsal.io.images import read_rgb

    return read_rgb(Path(__file__).resolve().parents[1] / "data" / f"{name}.jpg")


def _parse(model: nn.Module, layer: str) -> LayerInfo:
    from rtsal.methods.base import resolve_layer

    return resolve_layer(model, layer, LayerInfo(""))


def peer_layer_for(model: nn.Module, layer: LayerInfo, x: Tensor) -> tuple[str, str]:
    """A module name the peer libraries can hook for ``layer`` (they hook a module, not one of its calls).

    A module called once is its own answer. For a later call of a shared module (EfficientNet-Lite's head
    ReLU6 ``_swish#1``), the last module called once that finished before it with the same output shape
    (``_bn1``, the tensor the ReLU6 takes in). -> (name, note for the table, "" when none is needed).
    """
    calls: list[tuple[str, tuple[int, ...]]] = []
    counts: dict[str, int] = {}
    position: list[int] = []
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, args: object, out: object) -> None:
            k = counts.get(name, 0)
            counts[name] = k + 1
            shape = tuple(out.shape) if isinstance(out, Tensor) else ()
            calls.append((name, shape))
            if name == layer.name and k == layer.call:
                position.append(len(calls) - 1)

        return fn

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        with torch.inference_mode():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not position:
        raise UsageError(f"layer {layer} produced no output in a forward pass")
    if counts.get(layer.name, 0) == 1:
        return layer.name, ""
    at = position[0]
    shape = calls[at][1]
    for name, s in reversed(calls[:at]):
        if s == shape and counts[name] == 1:
            return (
                name,
                f"peers hook {name} (the module of the shared layer {layer} runs {counts[layer.name]}x)",
            )
    raise UsageError(f"layer {layer} is a shared module's call and has no single-use stand-in for the peers")


# -- the methods --------------------------------------------------------------------------------------------
def rtsal_entries(s: Setup, cskip: int, names: Sequence[str] | None = None) -> Iterator[Entry]:
    """Every registered rtsal method on ``s.x``."""
    for name in names or METHODS:
        runner = build_runner(name, s.explainer, layer=s.layer, cskip=cskip)

        def run(runner=runner) -> object:
            return runner.explain(s.x)

        yield Entry(name, "rtsal", run, lambda runner=runner: runner.passes, runner.close)


def compiled_entries(
    s: Setup,
    model: str,
    weights: str | None,
    cache_dir: str | None = None,
    names: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> Iterator[Entry]:
    """rtsal's engine methods on the compiled engine (``Explainer(compile=True)``: one AOTInductor graph of
    this model, input and method, built or loaded from the cache before any timing), as rows
    ``fastcam (compiled)``, ``smoe (compiled)``, ...: the same weights as ``s.explainer`` (random weights go
    through a state dict file), the same input. The build or load time goes to ``s.notes`` (and so the JSON),
    not into any row. A method the graph does not serve (another CAM) is left out with a note; a model that
    cannot be compiled gives no rows and a note."""
    import tempfile
    from pathlib import Path

    from rtsal.names import ENGINE_METHODS

    size = (int(s.x.shape[2]), int(s.x.shape[3]))
    with tempfile.TemporaryDirectory(prefix="rtsal-bench-") as tmp:
        if weights is None:  # random weights: hand these very weights to the compiled explainer
            weights = str(Path(tmp) / "weights.pt")
            torch.save(s.explainer.model.state_dict(), weights)
        ex = Explainer(model, weights=weights, device=str(s.explainer.device), size=size, compile=True,
                       cache_dir=cache_dir)
    try:
        progress("building or loading the compiled graph ...")
        t0 = time.perf_counter()
        first = ex.explain(s.x)
        seconds = time.perf_counter() - t0
        if first.engine != "compiled":
            s.notes.append(f"compiled rows: none, the model runs eager ({first.engine})")
            return
        key = next(iter(ex._compiled.source))
        how = {"cache": "loaded from the cache", "built": "built", "child": "built"}[ex._compiled.source[key]]
        s.notes.append(f"compiled graph {how} in {seconds:.1f} s before timing (first call included); "
                       f"the compiled rows are timed after it")
        for name in names or ENGINE_METHODS:
            runner = build_runner(name, ex)
            if runner.explain(s.x).engine != "compiled":
                runner.close()
                s.notes.append(f"{name} (compiled): its CAM is not in the graph, not timed")
                continue

            def run(runner=runner) -> object:
                return runner.explain(s.x)

            yield Entry(f"{name} (compiled)", "rtsal", run,
                        lambda runner=runner: f"{runner.passes}, compiled", runner.close)
    finally:
        ex.close()


def onnxruntime_entries(s: Setup, onnx_path: str | None = None) -> Iterator[Entry]:
    """rtsal's ONNX export run by ONNX Runtime: the model alone (logits) and the FastCAM graph (logits and
    every map, through :class:`rtsal.deploy.runtime.OrtExplainer`), both on ``s.x``. Without ``onnx_path``
    the explainer's model is exported here (takes a while: the dynamo exporter traces it)."""
    import tempfile
    from pathlib import Path

    from rtsal.deploy.onnx import export
    from rtsal.deploy.runtime import OrtExplainer

    size = (int(s.x.shape[2]), int(s.x.shape[3]))
    with tempfile.TemporaryDirectory(prefix="rtsal-bench-") as tmp:
        folder = Path(tmp)
        if onnx_path is None:
            state = folder / "weights.pt"
            torch.save(s.explainer.model.state_dict(), state)
            onnx_path = str(export(s.explainer.name, folder / "fastcam.onnx", weights=state, size=size,
                                   dynamic_batch=True, cam=s.explainer.cam_name))
        bare = folder / "logits.onnx"
        program = torch.onnx.export(s.clean, (s.x.contiguous(),), None, dynamo=True, verbose=False,
                                    external_data=False, input_names=["images"], output_names=["logits"])
        program.save(str(bare))
        runner = OrtExplainer(onnx_path, method=s.explainer.method)
        plain = OrtExplainer.session(bare)
    x = s.x.contiguous()
    x_np = x.numpy()
    yield Entry("forward", "onnxruntime", lambda: plain.run(None, {"images": x_np}), lambda: "1 fwd")
    yield Entry(runner.method, "onnxruntime", lambda: runner.explain(x), lambda: "1 fwd, maps in the graph",
                runner.close)


def _grad_cam_entries(s: Setup) -> Iterator[Entry]:
    import pytorch_grad_cam as pgc

    module = dict(s.clean.named_modules())[s.peer_layer]
    c = _channels(s.clean, module, s.x)
    specs = [
        ("GradCAM", "1 fwd + 1 full bwd (+ param grads)"),
        ("GradCAMPlusPlus", "1 fwd + 1 full bwd (+ param grads)"),
        ("EigenCAM", "1 fwd + SVD"),
        ("ScoreCAM", f"1 + {c} fwd"),
        ("AblationCAM", f"2 + {c} fwd"),
    ]
    for name, passes in specs:
        cam = getattr(pgc, name)(model=s.clean, target_layers=[module])

        def run(cam=cam) -> object:
            with contextlib.redirect_stderr(io.StringIO()):
                return cam(input_tensor=s.x, targets=None)

        yield Entry(name, "pytorch-grad-cam", run, lambda p=passes: p, cam.activations_and_grads.release)


def _torchcam_entries(s: Setup) -> Iterator[Entry]:
    from torchcam import methods as tcm

    specs = [
        ("GradCAM", "1 fwd + head bwd"),
        ("GradCAMpp", "1 fwd + head bwd"),
        ("SmoothGradCAMpp", "1 + 4 fwd + 4 head bwd"),
    ]
    size = tuple(s.x.shape[1:])
    for name, passes in specs:
        extractor = getattr(tcm, name)(s.clean, target_layer=s.peer_layer, input_shape=size)

        def run(extractor=extractor) -> object:
            scores = s.clean(s.x)
            return extractor(scores.argmax(dim=1).tolist(), scores)

        yield Entry(name, "torchcam", run, lambda p=passes: p, extractor.remove_hooks)


def _captum_entries(s: Setup) -> Iterator[Entry]:
    from captum.attr import GuidedGradCam, LayerGradCam

    module = dict(s.clean.named_modules())[s.peer_layer]
    target = s.target if len(s.target) > 1 else s.target[0]
    note = "target class given"
    lgc = LayerGradCam(s.clean, module)
    yield Entry(
        "LayerGradCam",
        "captum",
        lambda: lgc.attribute(s.x, target=target),
        lambda: "1 fwd + head bwd",
        note=note,
    )
    ggc = GuidedGradCam(s.clean, module)
    yield Entry(
        "GuidedGradCam",
        "captum",
        lambda: ggc.attribute(s.x.detach().requires_grad_(True), target=target),
        lambda: "2 fwd + head bwd + full bwd",
        note=note,
    )


PEERS: dict[str, Callable[[Setup], Iterator[Entry]]] = {
    "pytorch-grad-cam": _grad_cam_entries,
    "torchcam": _torchcam_entries,
    "captum": _captum_entries,
}
PEER_MODULES = {"pytorch-grad-cam": "pytorch_grad_cam", "torchcam": "torchcam", "captum": "captum"}


def installed_peers() -> dict[str, bool]:
    """Which peer libraries can be imported."""
    import importlib.util

    return {lib: importlib.util.find_spec(mod) is not None for lib, mod in PEER_MODULES.items()}


def _channels(model: nn.Module, module: nn.Module, x: Tensor) -> int:
    shape: list[int] = []
    h = module.register_forward_hook(lambda m, i, o: shape.append(o.shape[1]) if not shape else None)
    try:
        with torch.inference_mode():
            model(x[:1])
    finally:
        h.remove()
    return shape[0]


def selected(label: str, only: Sequence[str], skip: Sequence[str]) -> bool:
    """``label`` ("rtsal/fastcam", "pytorch-grad-cam/ScoreCAM") passes the substring filters (any case)."""
    low = label.lower()
    if only and not any(o.lower() in low for o in only):
        return False
    return not any(k.lower() in low for k in skip)


def run_all(
    s: Setup,
    *,
    iters: int = 30,
    warmup: int = 3,
    budget_s: float = 20.0,
    cskip: int = 16,
    peers: bool = True,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    progress: Callable[[str], None] = lambda line: None,
    extra: Sequence[Callable[[], Iterator[Entry]]] = (),
) -> list[Timing]:
    """Measure every selected rtsal method, then the ``extra`` groups (e.g. :func:`onnxruntime_entries`),
    then every selected method of the installed peers."""
    device = s.explainer.device

    def forward() -> None:
        with torch.inference_mode():
            s.clean(s.x)

    groups: list[Callable[[], Iterator[Entry]]] = [lambda: rtsal_entries(s, cskip), *extra]
    if peers:
        for lib, ok in installed_peers().items():
            if ok:
                groups.append(lambda lib=lib: PEERS[lib](s))
            elif not only or any(lib in name for name in only):  # only when it could have been asked for
                progress(f"{lib}: not installed, skipped (pip install 'rtsal[bench]')")
    rows: list[Timing] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in groups:
            for entry in group():
                try:
                    if not selected(entry.label, only, skip):
                        continue
                    progress(f"measuring {entry.label} ...")
                    try:
                        rows.append(measure(entry, forward, device, iters, warmup, budget_s))
                    except Exception as exc:  # noqa: BLE001 - a peer that cannot run this model is skipped
                        if entry.library == "rtsal":
                            raise
                        progress(f"  {entry.label}: failed ({type(exc).__name__}: {str(exc)[:80]}), skipped")
                        continue
                    t = rows[-1]
                    progress(f"  {t.median_ms:.1f} ms, {t.ratio:.2f}x the forward pass, {t.iters} iterations")
                finally:
                    entry.close()
    return rows


# -- output -------------------------------------------------------------------------------------------------
def _ratio(r: float) -> str:
    return f"{r:.3f}" if r < 2 else f"{r:.1f}" if r < 100 else f"{r:.0f}"


def format_table(rows: Sequence[Timing], header: str) -> str:
    """A fixed-width table with one row per method, and its footnotes."""
    head = (
        "method",
        "library",
        "passes per image",
        "iters",
        "median ms",
        "p10-p90 ms",
        "forward ms",
        "x forward",
    )
    body = [
        (
            r.method,
            r.library,
            r.passes,
            f"{r.iters}{'*' if r.first_call else ''}",
            f"{r.median_ms:.1f}",
            f"{r.p10_ms:.1f}-{r.p90_ms:.1f}",
            f"{r.forward_ms:.1f}",
            _ratio(r.ratio),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    right = {3, 4, 5, 6, 7}

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    lines = [header, fmt(head), "  ".join("-" * w for w in widths), *(fmt(b) for b in body)]
    if any(r.first_call for r in rows):
        lines.append("* slower than the time budget: one call, the first (warm-up) one")
    notes = sorted({r.note for r in rows if r.note})
    lines.extend(f"note: {n}" for n in notes)
    return "\n".join(lines)


def environment(s: Setup, size: int, batch: int) -> dict[str, Any]:
    import platform

    return {
        "model": s.explainer.name,
        "size": size,
        "batch": batch,
        "device": str(s.explainer.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "layer": str(s.layer),
        "peer_layer": s.peer_layer,
        "notes": s.notes,
    }


def to_json(rows: Sequence[Timing], env: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    return {"environment": env, "settings": settings, "rows": [asdict(r) for r in rows]}


COLOURS = {"rtsal": "#d62728", "pytorch-grad-cam": "#1f77b4", "torchcam": "#2ca02c", "captum": "#9467bd"}


def check_plotting() -> None:
    """Raise a one-line error now, before any measuring, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RtsalError("--plot needs matplotlib: pip install matplotlib (or 'rtsal[bench]')") from None


def plot(rows: Sequence[Timing], title: str, path: str) -> None:
    """A horizontal bar chart of the ratios to one forward pass, log scale, coloured by library."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(rows, key=lambda r: r.ratio)
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(order) + 1.4))
    labels = [r.method if r.library == "rtsal" else f"{r.method} ({r.library})" for r in order]
    ys = range(len(order))
    ax.barh(ys, [r.ratio for r in order], color=[COLOURS.get(r.library, "grey") for r in order])
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("time per frame / one plain forward pass (log scale)")
    ax.set_title(title, fontsize=10)
    for y, r in zip(ys, order, strict=True):
        ax.text(r.ratio * 1.05, y, _ratio(r.ratio) + "x", va="center", fontsize=7)
    hi = max(r.ratio for r in order)
    ax.set_xlim(min(0.8, min(r.ratio for r in order) * 0.9), hi * 3 if hi > 1 else 2)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c)
        for lib, c in COLOURS.items()
        if any(r.library == lib for r in rows)
    ]
    names = [lib for lib in COLOURS if any(r.library == lib for r in rows)]
    ax.legend(handles, names, loc="lower right", fontsize=8)
    fig.tight_layout()
    from rtsal.outputs import AtomicPath

    try:
        with AtomicPath(path) as out:  # the chart appears at ``path`` complete, or not at all
            fig.savefig(out.tmp, dpi=120)
            out.commit()
    except OSError as exc:
        raise RtsalError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


# -- CSKIP ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CskipRow:
    k: int  # 0: all channels
    channels: int
    median_ms: float
    forward_ms: float
    ratio: float
    corr_mean: float  # Pearson correlation with full Score-CAM's map, mean over the images
    corr_min: float


def cskip_sweep(
    s: Setup,
    ks: Sequence[int],
    images: Sequence[np.ndarray],
    iters: int = 3,
    budget_s: float = 20.0,
    progress: Callable[[str], None] = lambda line: None,
) -> list[CskipRow]:
    """Score-CAM with each K in ``ks``: time per frame (interleaved with a forward pass) and agreement with
    full Score-CAM (all channels) over ``images``. Full Score-CAM runs once per image, each call paired with
    a forward pass; that is also the timing of the K that keep every channel."""
    e = s.explainer
    device = e.device

    def forward() -> None:
        with torch.inference_mode():
            s.clean(s.x)

    batch = [e.preprocess(im) for im in images]
    full_runner = build_runner("scorecam", e, layer=s.layer, cskip=0)
    full, pairs = [], []
    for n, x in enumerate(batch):
        progress(f"full Score-CAM, image {n + 1} of {len(batch)} ...")
        entry = Entry("scorecam", "rtsal", lambda x=x: full.append(full_runner.explain(x)), lambda: "")
        pairs.append(measure(entry, forward, device, 1, 0, budget_s=0.0))  # budget 0: one call, the sample
    maps = [r.saliency[0].flatten().double() for r in full]
    channels = full_runner.layer_shape[0] if full_runner.layer_shape else 0
    rows = []
    for k in ks:
        kept = channels if k <= 0 or k >= channels else k
        if kept == channels:
            ms = statistics.median(t.median_ms for t in pairs)
            fwd = statistics.median(t.forward_ms for t in pairs)
            ratio = statistics.median(t.ratio for t in pairs)
            rows.append(CskipRow(k, kept, ms, fwd, ratio, 1.0, 1.0))
            continue
        runner = build_runner("scorecam", e, layer=s.layer, cskip=k)
        progress(f"K={k} ...")
        entry = Entry(f"scorecam K={k}", "rtsal", lambda r=runner: r.explain(s.x), lambda: "")
        t = measure(entry, forward, device, iters, 1, budget_s=budget_s)
        cs = []
        for x, ref in zip(batch, maps, strict=True):
            m = runner.explain(x).saliency[0].flatten().double()
            cs.append(float(torch.corrcoef(torch.stack([m, ref]))[0, 1]))
        rows.append(
            CskipRow(k, kept, t.median_ms, t.forward_ms, t.ratio, float(np.mean(cs)), float(np.min(cs)))
        )
    return rows


def format_cskip(rows: Sequence[CskipRow], header: str) -> str:
    head = ("K", "channels", "median ms", "forward ms", "x forward", "corr mean", "corr min")
    body = [
        (
            "all" if r.k <= 0 else str(r.k),
            str(r.channels),
            f"{r.median_ms:.1f}",
            f"{r.forward_ms:.1f}",
            _ratio(r.ratio),
            f"{r.corr_mean:.3f}",
            f"{r.corr_min:.3f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        header,
        "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def eprint(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
