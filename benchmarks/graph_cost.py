"""What the FastCAM maps cost inside the graph, on each runtime, against that runtime's plain model.

For each model, runtime and precision, the plain model and the graph with maps (logits, the raw CAM and the
gauss-normalised SMOE map of every scale at its own resolution: what the redesigned graph returns) are built
with the same runtime and settings and called interleaved, round after round, from a preprocessed tensor:

- ``openvino`` (``bf16``: the default inference precision on a CPU with AVX512_BF16 or AMX; ``f32``) and
  ``onnxruntime`` (``f32``): the graph exported with ``torch.onnx.export`` (dynamo) once per statistic
  formulation: ``ref`` (``smoe_scale``, ``torch.log2``), ``sqrt`` (``smoe_scale_sqrt``: log from square roots,
  channel means as matrix products), ``mm`` (``smoe_scale_mm``: natural log, matrix-product means), ``conv``
  (``smoe_scale_conv``: log from square roots, channel means as 1x1 convolutions);
- ``compiled``: the plain model by ``torch.compile`` with freezing under ``inference_mode`` (what a PyTorch
  user runs) against rtsal's own AOTInductor graph (``graph.build_package``, called through
  ``graph.load_package``, as the engine does; its statistic is the engine's ``smoe_fastlog``).

Each row: median ms of both (wall clock, and CPU time of the process: on a machine shared with other jobs the
CPU time is the steadier measure), the ratio of medians, the spread (interquartile range of the per-round
ratios) and the agreement of the maps with eager PyTorch at f32 (the lowest correlation over the CAM and the
per-scale maps; top-1 the same).

    python benchmarks/graph_cost.py                                  # Lite0 and ResNet-50, 2 threads
    python benchmarks/graph_cost.py --models efficientnet-lite0 --runtimes openvino --threads 1

Exports and packages are kept in ``--folder`` between runs. Writes ``results/graph-cost.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.engine.hooks import ActivationRecorder  # noqa: E402
from rtsal.engine.saliency.cam import cam_from_linear_head  # noqa: E402
from rtsal.engine.saliency.fastcam import scale_maps  # noqa: E402
from rtsal.engine.saliency.norm import gauss_norm  # noqa: E402
from rtsal.engine.saliency.smoe import (  # noqa: E402
    smoe_scale,
    smoe_scale_conv,
    smoe_scale_mm,
    smoe_scale_sqrt,
)

FORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "ref": smoe_scale, "sqrt": smoe_scale_sqrt, "mm": smoe_scale_mm, "conv": smoe_scale_conv}


class MapsGraph(nn.Module):
    """``x`` -> logits, the raw CAM (N, h, w) and the per-scale maps at their own resolutions (a throwaway
    stand-in for the engine's graph, exportable to ONNX)."""

    def __init__(self, ex: Explainer, statistic: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = ex.model
        self.recorder = ActivationRecorder(ex.model, ex.layers)
        self.recorder.__enter__()
        self.relu, self.cam_relu, self.statistic = ex._relu, ex.layers[-1].relu, statistic
        self.register_buffer("head", ex._head_weight.detach().clone().float())

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        logits = self.model(x)
        acts = self.recorder.pop()
        last = torch.relu(acts[-1]) if self.cam_relu else acts[-1]
        cam = cam_from_linear_head(last, self.head, logits.argmax(dim=1), "gradcampp")
        return (logits, cam, *scale_maps(acts, self.relu, self.statistic, gauss_norm))


def export(net: nn.Module, x: Tensor, path: Path) -> Path:
    if not path.exists():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(net, (x,), None, dynamo=True, input_names=["images"], verbose=False,
                                     external_data=False, optimize=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(prog.model_proto.SerializeToString())
        tmp.replace(path)
    return path


PROFILES: dict[str, Callable[[], dict[str, float]]] = {}  # --profile: name -> per-node-type CPU ms of a call


def openvino_call(path: Path, x: np.ndarray, precision: str, threads: int,
                  profile: str | None = None) -> Callable[[], list[np.ndarray]]:
    import openvino as ov

    core = ov.Core()
    cfg: dict[str, object] = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                              "PERFORMANCE_HINT": "LATENCY"}
    if precision == "f32":
        cfg["INFERENCE_PRECISION_HINT"] = "f32"
    if profile:
        cfg["PERF_COUNT"] = True
    compiled = core.compile_model(core.read_model(str(path)), "CPU", cfg)
    req = compiled.create_infer_request()
    if profile:
        def nodes() -> dict[str, float]:
            out: dict[str, float] = {}
            for info in req.profiling_info:  # the last call's
                key = f"{info.node_type}/{info.exec_type}"
                out[key] = out.get(key, 0.0) + info.cpu_time.total_seconds() * 1e3
            return out

        PROFILES[profile] = nodes
    n = len(compiled.outputs)

    def call() -> list[np.ndarray]:
        req.infer({0: x}, share_inputs=True)
        return [req.get_output_tensor(i).data for i in range(n)]

    return call


def ort_call(path: Path, x: np.ndarray, threads: int) -> Callable[[], list[np.ndarray]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"images": x})


def compiled_calls(ex: Explainer, x: Tensor, folder: Path, threads: int) -> tuple[Callable, Callable]:
    """(plain torch.compile with freezing, rtsal's AOTInductor graph through the engine's loader, built for
    ``threads``: its prepacked weights are laid out for that many threads, as torch.compile's are for the
    threads of its first call)."""
    import torch._inductor.config as inductor_config

    from rtsal.engine.backends.common import graph_of
    from rtsal.engine.graph import build_package, clean_copy, load_package

    inductor_config.freezing = True
    model = clean_copy(ex.model).eval().to(memory_format=torch.channels_last)
    xl = x.contiguous(memory_format=torch.channels_last)
    fast = torch.compile(model)

    def plain() -> Tensor:
        with torch.inference_mode():
            return fast(xl)

    path = folder / f"rtsal-graph-{threads}threads.pt2"
    if not path.exists():
        model = clean_copy(ex.model).to(memory_format=torch.channels_last)
        graph = graph_of(ex.spec.for_input(tuple(x.shape)), model, "compiled")
        try:
            build_package(graph, xl, path, threads=threads)
        finally:
            graph.close()
    run = load_package(path, 1)
    target = torch.full((x.shape[0],), -1, dtype=torch.long)

    def explained() -> list[np.ndarray]:
        out = run(xl, target)
        return [out.logits.numpy(), out.cam_small.numpy(), *(m.numpy() for m in out.maps)]

    return plain, explained


def agreement(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> tuple[float, bool]:
    """(lowest correlation over the CAM and the per-scale maps, same top-1)."""
    cors = [float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])
            for a, b in zip(ref[1:], got[1:], strict=True)]
    return min(cors), int(np.argmax(ref[0])) == int(np.argmax(got[0]))


def measure(calls: dict[str, Callable], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds (the order rotates every round); wall and process CPU milliseconds per call."""
    for f in calls.values():
        for _ in range(3):
            f()
    out = {k: {"wall": [], "cpu": []} for k in calls}
    order = list(calls)
    for i in range(rounds):
        j = i % len(order)
        for k in order[j:] + order[:j]:
            c, t = time.process_time(), time.perf_counter()
            calls[k]()
            out[k]["wall"].append((time.perf_counter() - t) * 1e3)
            out[k]["cpu"].append((time.process_time() - c) * 1e3)
    return out


def summarise(times: dict, plain: str, key: str) -> dict[str, float]:
    row: dict[str, float] = {}
    for clock in ("wall", "cpu"):
        p, e = np.asarray(times[plain][clock]), np.asarray(times[key][clock])
        r = e / p
        row[f"plain_{clock}_ms"] = float(np.median(p))
        row[f"explained_{clock}_ms"] = float(np.median(e))
        row[f"ratio_{clock}"] = float(np.median(e) / np.median(p))
        row[f"spread_{clock}"] = float(np.percentile(r, 75) - np.percentile(r, 25))
    return row


def run_model(name: str, a: argparse.Namespace) -> list[dict[str, object]]:
    torch.manual_seed(0)
    weights = "default" if name.startswith("efficientnet-lite") else None  # ResNet-50: random init
    ex = Explainer(name, weights=weights, size=(a.size, a.size), channels_last=False)
    ex._recorder.close()  # the graphs below record with their own hooks
    import cv2

    img = cv2.cvtColor(cv2.imread(str(ROOT / "rtsal" / "data" / "coffee.jpg")), cv2.COLOR_BGR2RGB)
    x = ex.preprocess(img).contiguous()
    folder = Path(a.folder) / f"{name}-{a.size}"
    folder.mkdir(parents=True, exist_ok=True)
    ref_net = MapsGraph(ex, smoe_scale).eval()
    with torch.inference_mode():
        ref = [t.numpy().copy() for t in ref_net(x)]
    ref_net.recorder.close()
    runtimes = a.runtimes.split(",")
    files = {"plain": export(ex.model.eval(), x, folder / "plain.onnx")} if runtimes != ["compiled"] else {}
    for form in a.forms.split(","):
        if runtimes == ["compiled"]:
            break
        net = MapsGraph(ex, FORMS[form]).eval()
        try:
            files[form] = export(net, x, folder / f"{form}.onnx")
        finally:
            net.recorder.close()
    xn = x.numpy()
    groups: list[tuple[str, str, dict[str, Callable]]] = []
    for rt in runtimes:
        if rt == "openvino":
            for prec in ("bf16", "f32"):
                groups.append((rt, prec, {k: openvino_call(p, xn, prec, a.threads,
                                                            f"{name} {prec} {k}" if a.profile else None)
                                           for k, p in files.items()}))
        elif rt == "onnxruntime":
            groups.append((rt, "f32", {k: ort_call(p, xn, a.threads) for k, p in files.items()}))
        elif rt == "compiled":
            plain, explained = compiled_calls(ex, x, folder, a.threads)
            groups.append((rt, "f32", {"plain": plain, "fastlog": explained}))
    calls = {f"{rt}/{prec}/{k}": f for rt, prec, fs in groups for k, f in fs.items()}
    times = measure(calls, a.rounds)
    rows = []
    for rt, prec, fs in groups:
        for k, f in fs.items():
            if k == "plain":
                continue
            cor, same = agreement(ref, [np.asarray(o) for o in f()])
            rows.append({"model": name, "runtime": rt, "precision": prec, "formulation": k,
                         **summarise(times, f"{rt}/{prec}/plain", f"{rt}/{prec}/{k}"),
                         "map_correlation": cor, "top1_same": same})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="efficientnet-lite0,resnet50")
    p.add_argument("--runtimes", default="openvino,onnxruntime,compiled")
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--profile", action="store_true",
                   help="print OpenVINO's per-node profile (PERF_COUNT, CPU ms by node type) of each graph")
    p.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "rtsal-graph-cost"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "graph-cost.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = [r for name in a.models.split(",") for r in run_model(name, a)]
    print(f"\n{a.size}x{a.size}, batch 1, {a.threads} threads, {a.rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| model | runtime | precision | statistic | plain ms (CPU) | explained ms (CPU) | ratio CPU "
          "(IQR) | ratio wall (IQR) | map corr | top-1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['formulation']} | "
              f"{r['plain_cpu_ms']:.2f} | {r['explained_cpu_ms']:.2f} | {r['ratio_cpu']:.3f} "
              f"({r['spread_cpu']:.3f}) | {r['ratio_wall']:.3f} ({r['spread_wall']:.3f}) | "
              f"{r['map_correlation']:.4f} | {'same' if r['top1_same'] else 'DIFFERS'} |")
    profiles = {}
    for key, nodes in PROFILES.items():
        profiles[key] = prof = nodes()
        top = sorted(prof.items(), key=lambda kv: -kv[1])[:12]
        print(f"\nOpenVINO {key}: {sum(prof.values()):.2f} ms; " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"size": a.size, "threads": a.threads, "rounds": a.rounds, "torch": torch.__version__,
            "load_average": os.getloadavg()[0], "cpu": torch.backends.cpu.get_cpu_capability()}
    out.write_text(json.dumps({**meta, "rows": rows, "openvino_profiles": profiles}, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
