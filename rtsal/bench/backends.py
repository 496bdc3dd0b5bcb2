"""Each installed backend's plain forward pass against its explained ``fastcam`` call, interleaved.

For one model, input size and thread count, every row is a callable timed in the same loop (the order
rotates each round), so load on the machine hits every row alike:

- ``torch plain``: the model in ``inference_mode`` (channels-last), eager; ``torch explain``: the
  Explainer's eager ``explain`` on the preprocessed tensor;
- ``torch.compile plain``: ``torch.compile`` with freezing, called under ``inference_mode`` (what a PyTorch
  user runs), and the same under bf16 autocast; ``compiled explain``: the AOTInductor graph (``--backend
  compiled``), at f32 and ``--precision bf16``;
- ``onnxruntime plain``: the plain model in ONNX Runtime's default CPU session; ``onnxruntime explain``;
- ``openvino plain (default)``: ``Core().compile_model(model, "CPU")`` with no settings (bf16 on CPUs that
  have it), at the one static input shape; ``openvino plain f32`` / ``bf16``; ``openvino explain f32`` /
  ``bf16``; with nncf, ``openvino plain int8`` (the plain model quantised as ``--precision int8`` quantises)
  and ``openvino explain int8``.

Each explain row's ratio is to the plain row of the same runtime and precision (``base``). Used by
``rtsal bench --backends`` and ``benchmarks/backends.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["Row", "measure", "table"]


@dataclass(frozen=True)
class Row:
    name: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    base: str | None  # the plain row this one is compared with
    ratio: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _quiet_convert(module: torch.nn.Module, x: torch.Tensor):
    import warnings

    import openvino as ov

    from rtsal.engine.backends.openvino import static

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # at the one input shape it runs at: the fastest plain model (convert_model leaves shapes dynamic)
        return static(ov.convert_model(module, example_input=(x,)), tuple(x.shape))


def installed_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _ort_plain(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    import io
    import warnings

    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], opset_version=18)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])  # default session
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


def measure(
    model: str,
    weights: str | None,
    size: int = 224,
    threads: int = 2,
    rounds: int = 30,
    backends: tuple[str, ...] = ("torch", "compiled", "onnxruntime", "openvino"),
    cache_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[Row], dict[str, float]]:
    """Rows of :class:`Row` (see the module docstring) and the build seconds of each backend."""
    from rtsal.engine.backends import installed
    from rtsal.engine.explainer import Explainer
    from rtsal.engine.graph import clean_copy

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    calls: dict[str, Callable[[], object]] = {}
    bases: dict[str, str] = {}
    builds: dict[str, float] = {}
    closers: list[Callable[[], None]] = []
    ref = Explainer(model, weights=weights, size=(size, size))
    closers.append(ref.close)
    x = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    plain = clean_copy(ref.model).eval()
    x_dense = x.contiguous()

    def torch_plain() -> object:
        with torch.inference_mode():
            return plain(x)

    if "torch" in backends:
        calls["torch plain"] = torch_plain
        calls["torch explain"] = lambda: ref.explain(x)
        bases["torch explain"] = "torch plain"

    def explainer(backend: str, precision: str = "f32") -> Explainer:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        ex = Explainer(model, weights=weights, size=(size, size), backend=backend, precision=precision,
                       compile=True, cache_dir=cache_dir, threads=threads)
        ex.explain(x)  # builds (or loads) the graph
        builds[f"{backend} {precision}"] = time.perf_counter() - t0
        closers.append(ex.close)
        log(f"  {model}: {backend} {precision} ready in {builds[f'{backend} {precision}']:.1f} s")
        return ex

    if "compiled" in backends:
        t0 = time.perf_counter()
        compiled_plain = torch.compile(clean_copy(ref.model).eval(), options={"freezing": True})
        with torch.inference_mode():
            compiled_plain(x)
        builds["torch.compile plain"] = time.perf_counter() - t0

        def tc_plain() -> object:
            with torch.inference_mode():
                return compiled_plain(x)

        def tc_plain_bf16() -> object:  # what a PyTorch user runs at bf16: autocast around the compiled model
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled_plain(x)

        calls["torch.compile plain"] = tc_plain
        calls["torch.compile plain bf16"] = tc_plain_bf16
        for precision, base in (("f32", "torch.compile plain"), ("bf16", "torch.compile plain bf16")):
            ex = explainer("compiled", precision)
            name = "compiled explain" + ("" if precision == "f32" else " bf16")
            calls[name] = lambda ex=ex: ex.explain(x)
            bases[name] = base
    if "onnxruntime" in backends and installed("onnxruntime"):
        calls["onnxruntime plain"] = _ort_plain(clean_copy(ref.model).eval(), x_dense)
        ex = explainer("onnxruntime")
        calls["onnxruntime explain"] = lambda ex=ex: ex.explain(x)
        bases["onnxruntime explain"] = "onnxruntime plain"
    if "openvino" in backends and installed("openvino"):
        import openvino as ov

        core = ov.Core()
        ov_model = _quiet_convert(clean_copy(ref.model).eval(), x_dense)
        x_np = x_dense.numpy()
        for label, cfg in (("default", {}), ("f32", {"INFERENCE_PRECISION_HINT": "f32"}),
                           ("bf16", {"INFERENCE_PRECISION_HINT": "bf16"})):
            request = core.compile_model(ov_model, "CPU", cfg).create_infer_request()
            calls[f"openvino plain {label}"] = lambda r=request: r.infer([x_np])
        for precision in ("f32", "bf16"):
            ex = explainer("openvino", precision)
            calls[f"openvino explain {precision}"] = lambda ex=ex: ex.explain(x)
            bases[f"openvino explain {precision}"] = f"openvino plain {precision}"
        if installed_module("nncf"):
            ex = explainer("openvino", "int8")
            # the plain model quantised the same way (NNCF on the same images, the same first blocks f32)
            plain_int8 = ex._compiled._built[tuple(x.shape)].plain()
            calls["openvino plain int8"] = lambda: plain_int8(x_dense)
            calls["openvino explain int8"] = lambda ex=ex: ex.explain(x)
            bases["openvino explain int8"] = "openvino plain int8"
    names = list(calls)
    for fn in calls.values():  # warm-up
        fn()
        fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            calls[n]()
            times[n].append((time.perf_counter() - t0) * 1e3)
    for close in closers:
        close()
    med = {n: float(np.median(v)) for n, v in times.items()}
    rows = []
    for n in names:
        p10, p90 = (float(v) for v in np.percentile(times[n], [10, 90]))
        base = bases.get(n)
        rows.append(Row(n, med[n], p10, p90, base, med[n] / med[base] if base else None))
    return rows, builds


def table(model: str, rows: list[Row]) -> str:
    """A Markdown table of ``rows``."""
    eager = next((r.median_ms for r in rows if r.name == "torch plain"), None)
    out = [f"| {model} | median ms | p10-p90 | vs its runtime's plain | vs eager plain |",
           "|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio else ""
        ve = f"{r.median_ms / eager:.2f}x" if eager else ""
        out.append(f"| {r.name} | {r.median_ms:.2f} | {r.p10_ms:.1f}-{r.p90_ms:.1f} | {ratio} | {ve} |")
    return "\n".join(out)
