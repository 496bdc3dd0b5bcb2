"""Lower precisions measured: agreement with eager f32, speed against the plain forward of the same runtime.

Two tables, one command each (or ``--part all``):

- ``--part torch``: the explained graph (``graph_of(spec, clean_copy(model), "compiled")``, built as the
  compiled backend builds it: ``torch.export`` + AOTInductor with freezing) and the plain model under
  ``torch.compile`` (freezing, ``inference_mode``: the baseline of issue 21), at f32 and under
  ``torch.autocast("cpu", torch.bfloat16)`` in two variants: ``stat
  f32`` (the model autocast, the scale-end tensors cast to f32 before the statistic and the CAM) and ``first
  blocks f32`` (what ``--precision bf16`` builds: :func:`rtsal.engine.precision.lower`, which also keeps every
  module that runs before the end of the last scale at stride <= 4 out of autocast).
- ``--part openvino``: the OpenVINO graph of the explainer (``backends.openvino.convert``) at f32, bf16, and
  INT8 by NNCF post-training quantisation (``nncf.quantize``) calibrated on the bundled photographs and eval
  images (``backends.openvino.calibration_samples``): the whole trunk (only the statistic, CAM and
  normalisation left out: :func:`int8_ignored_scope`), and what ``--precision int8`` builds
  (``backends.openvino.quantize``: the first blocks left out too, at f32); the plain model quantised by
  ``quantize(..., maps=False)`` is the baseline. Every OpenVINO model has static input shapes, as the
  backend builds them (``backends.openvino.static``).

Agreement: against the eager torch engine at f32 on every bundled photograph and eval image (224x224), the
same top-1 and the worst correlation of the fused map, the CAM and each per-scale map (the helpers of
``benchmarks/precision.py``; the maps are assembled by the engine's one host assembler,
``rtsal.engine.result.assemble``). INT8 is calibrated and evaluated on the same 8 images: optimistic.

Speed: each callable is called from a preprocessed tensor, interleaved round after round (rotating order);
medians, 10th-90th percentiles, and the median of the per-round ratios to the plain forwards.

    python benchmarks/precision_speed.py --part all --json benchmarks/results/precision-speed.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from precision import corr, images  # noqa: E402

from rtsal.engine.backends.common import example_inputs, graph_of  # noqa: E402
from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.engine.graph import GraphOutput, build_package, clean_copy, load_package  # noqa: E402
from rtsal.engine.precision import lower  # noqa: E402
from rtsal.engine.result import assemble  # noqa: E402

Run = Callable[[torch.Tensor, torch.Tensor], GraphOutput]


# -- agreement -----------------------------------------------------------------------------------------------
def agreement(ex: Explainer, run: Run, pics: list, refs: list) -> dict[str, Any]:
    """Top-1 and worst map correlations of ``run`` (x, target) -> GraphOutput against the eager results."""
    same, worst = 0, {}
    for (_, im), ref in zip(pics, refs, strict=True):
        x = ex.preprocess(im)
        out = run(x, torch.full((1,), -1, dtype=torch.long))
        got = assemble(ex.method, out.logits.float(), out.target, out.cam_small.float(),
                       [m.float() for m in out.maps], tuple(ref.fused.shape[-2:]), ex._weights_t,
                       ex.class_names, ex.topk, tuple(i.label for i in ex.layers), {}, "bench")
        same += int(got.topk.indices[0, 0]) == int(ref.topk.indices[0, 0])
        cells = {"fused": corr(got.fused, ref.fused), "cam": corr(got.cam, ref.cam),
                 **{f"scale {i}": corr(got.scales[:, i], ref.scales[:, i])
                    for i in range(ref.scales.shape[1])}}
        for k, v in cells.items():
            worst[k] = min(worst.get(k, 1.0), v)
    return {"top1_same": same, "images": len(pics), "worst_corr": worst,
            "meets": same == len(pics) and min(worst.values()) >= 0.995}


# -- speed ---------------------------------------------------------------------------------------------------
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, bases: tuple[str, ...],
                clock: str = "cpu") -> dict[str, Any]:
    """Every call once per round, rotating order; ms medians, p10-p90 and per-round ratios to ``bases``.
    ``clock``: ``cpu`` (the process's CPU time: the work of a call, steady on a loaded machine at 1 thread)
    or ``wall``."""
    now = CLOCK[clock]
    names = list(calls)
    for f in calls.values():  # warm-up
        f()
        f()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t = now()
            calls[n]()
            times[n].append((now() - t) * 1e3)
    out = {}
    for n in names:
        ts = sorted(times[n])
        row = {"median_ms": statistics.median(ts), "p10_ms": ts[len(ts) // 10],
               "p90_ms": ts[min(len(ts) - 1, (9 * len(ts)) // 10)]}
        for b in bases:
            if b in times:
                ratios = sorted(a / c for a, c in zip(times[n], times[b], strict=True))
                row[f"vs {b}"] = statistics.median(ratios)
                row[f"vs {b} p10-p90"] = [ratios[len(ratios) // 10],
                                          ratios[min(len(ratios) - 1, (9 * len(ratios)) // 10)]]
        out[n] = row
    return out


# -- PyTorch: autocast with torch.compile --------------------------------------------------------------------
class Autocast(nn.Module):
    """``module`` run under bf16 autocast on the CPU."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.module(*args)

    @property
    def needs_head_grad(self) -> bool:  # what build_package asks of an ExplainGraph
        return bool(getattr(self.module, "needs_head_grad", False))

    def trace_head(self, example: torch.Tensor) -> None:
        self.module.trace_head(example)


def compiled(module: nn.Module) -> Callable[..., Any]:
    """``torch.compile`` with freezing, called under ``inference_mode``."""
    c = torch.compile(module, options={"freezing": True})

    def call(*args: Any) -> Any:
        with torch.inference_mode():
            return c(*args)

    return call


def aoti(graph: nn.Module, x: torch.Tensor, folder: Path) -> Run:
    """``graph`` built as the compiled backend builds it (``torch.export`` + AOTInductor, freezing) and
    loaded for calls from this thread."""
    path = folder / f"g{len(list(folder.iterdir()))}.pt2"
    return load_package(build_package(graph, x, path))


def setup(
    model_name: str, size: int, agree: bool
) -> tuple[Explainer, Any, torch.Tensor, torch.Tensor, list, list]:
    """The eager f32 explainer (Lite0 with its weights, others random), its spec at (1, 3, size, size), the
    first image preprocessed, the top-1 target, the images and (``agree``) their eager results."""
    weights = "default" if model_name.startswith("efficientnet-lite") else None
    pics = images(size)
    torch.manual_seed(0)
    ex = Explainer(model_name, weights=weights, size=size)
    spec = ex.spec.for_input((1, 3, size, size))
    x = ex.preprocess(pics[0][1])
    tgt = torch.full((1,), -1, dtype=torch.long)
    refs = [ex.explain(im) for _, im in pics] if agree else []
    return ex, spec, x, tgt, pics, refs


def torch_part(
    model_name: str, size: int, rounds: int, agree: bool, clock: str
) -> dict[str, Any]:
    ex, spec, x, tgt, pics, refs = setup(model_name, size, agree)
    explained: dict[str, Run] = {}

    def graph() -> nn.Module:
        return graph_of(spec, clean_copy(ex.model).eval(), "compiled")

    t = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="rtsal-precision-"))
    explained["explain f32"] = aoti(graph(), x, folder)
    g = graph()  # ExplainGraph casts the scale-end tensors and the logits to f32 itself
    g.model = Autocast(g.model)
    explained["explain bf16 stat f32"] = aoti(g, x, folder)
    explained["explain bf16 first blocks f32 (--precision bf16)"] = aoti(lower(graph(), "bf16", x), x, folder)
    plain_f32 = compiled(clean_copy(ex.model).eval())
    plain_bf16 = compiled(Autocast(clean_copy(ex.model).eval()))
    for f in (*explained.values(),):
        f(x, tgt)
    plain_f32(x)
    plain_bf16(x)
    build_s = time.perf_counter() - t
    print(f"{model_name}: compiled in {build_s:.0f} s", file=sys.stderr)
    rows: dict[str, Any] = {}
    if agree:
        for name, run in explained.items():
            rows[name] = agreement(ex, run, pics, refs)
            print(name, rows[name], file=sys.stderr)
    calls = {"plain f32": lambda: plain_f32(x), "plain bf16": lambda: plain_bf16(x)}
    calls.update({n: (lambda r=r: r(x, tgt)) for n, r in explained.items()})
    speed = interleaved(calls, rounds, ("plain f32", "plain bf16"), clock)
    ex.close()
    shutil.rmtree(folder, ignore_errors=True)
    return {"model": model_name, "agreement": rows, "speed": speed, "build_s": build_s}


# -- OpenVINO: INT8 by NNCF ----------------------------------------------------------------------------------
def int8_ignored_scope(ov_model: Any) -> Any:
    """The 'whole trunk' INT8 row: only the statistic, normalisation and CAM unquantised (the nodes the maps
    depend on but the logits do not); ``--precision int8`` also leaves the first blocks out
    (``backends.openvino.int8_ignored``)."""
    import nncf

    from rtsal.engine.backends.openvino import _upstream

    outs = list(ov_model.outputs)  # logits, top_p, top_i, target, cam_small, maps...
    ignored = _upstream(outs[4:]) - _upstream(outs[:1])
    names = sorted(n.get_friendly_name() for n in ov_model.get_ordered_ops()
                   if n.get_friendly_name() in ignored and n.get_type_name() not in ("Constant", "Parameter"))
    return nncf.IgnoredScope(names=names, validate=False)


def ov_part(
    model_name: str, size: int, rounds: int, agree: bool, clock: str
) -> dict[str, Any]:
    import logging

    import nncf
    import openvino as ov

    from rtsal.engine.backends.openvino import (
        calibration_samples,
        convert,
        int8_ignored,
        ov_config,
        quantize,
        static,
    )

    nncf.set_log_level(logging.WARNING)

    ex, spec, x, tgt, pics, refs = setup(model_name, size, agree)
    core = ov.Core()
    threads = torch.get_num_threads()

    def ov_explain() -> Any:
        return convert(spec, ex.model)

    def ov_plain() -> Any:
        with torch.no_grad():
            x1 = example_inputs(spec)[0]
            return static(ov.convert_model(clean_copy(ex.model).eval(), example_input=x1), x1.shape)

    t = time.perf_counter()
    explain_f32, plain_f32 = ov_explain(), ov_plain()
    samples = calibration_samples(ex.preprocess, spec.shape)  # what --precision int8 calibrates on
    dataset_explain = nncf.Dataset(samples, lambda a: (a, np.full((1,), -1, dtype=np.int64)))
    whole = nncf.quantize(explain_f32, dataset_explain, subset_size=len(samples),
                          ignored_scope=int8_ignored_scope(explain_f32))
    shipped = quantize(ov_explain(), samples)  # --precision int8: the first blocks unquantised too
    plain_int8 = quantize(ov_plain(), samples, maps=False)
    quant_s = time.perf_counter() - t

    def comp(m: Any, precision: str) -> Any:
        return core.compile_model(m, "CPU", ov_config(precision, threads))

    models = {
        "plain f32": comp(plain_f32, "f32"), "plain bf16": comp(plain_f32, "bf16"),
        "plain int8": comp(plain_int8, "bf16"), "plain int8 f32": comp(plain_int8, "f32"),
        "explain f32": comp(explain_f32, "f32"), "explain bf16": comp(explain_f32, "bf16"),
        "explain int8 whole trunk": comp(whole, "bf16"),
        "explain int8 whole trunk, f32 hint": comp(whole, "f32"),
        "explain int8 first blocks f32 (--precision int8)": comp(shipped, "int8"),
    }
    reqs = {n: m.create_infer_request() for n, m in models.items()}

    def ov_run(req: Any, n_out: int) -> Run:
        def run(xx: torch.Tensor, target: torch.Tensor) -> GraphOutput:
            req.infer([np.ascontiguousarray(xx.numpy(), dtype=np.float32), target.numpy()])
            out = [torch.from_numpy(req.get_output_tensor(i).data.copy()) for i in range(n_out)]
            return GraphOutput(*out[:5], tuple(out[5:]))

        return run

    rows: dict[str, Any] = {}
    if agree:
        for name in [n for n in models if n.startswith("explain")]:
            rows[name] = agreement(ex, ov_run(reqs[name], len(models[name].outputs)), pics, refs)
            print(name, rows[name], file=sys.stderr)
    xs = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    ts = tgt.numpy()
    calls = {n: (lambda r=r, n=n: r.infer([xs] if n.startswith("plain") else [xs, ts]))
             for n, r in reqs.items()}
    speed = interleaved(calls, rounds, ("plain f32", "plain bf16", "plain int8", "plain int8 f32"), clock)
    ex.close()
    return {"model": model_name, "agreement": rows, "speed": speed, "quantise_s": quant_s,
            "int8_unquantised_nodes": len(int8_ignored(shipped))}


# -- tables --------------------------------------------------------------------------------------------------
def print_tables(res: list[dict[str, Any]]) -> None:
    for r in res:
        ag = r["agreement"]
        if ag:
            keys = list(next(iter(ag.values()))["worst_corr"])
            print(f"\n| {r['part']} {r['model']}, {next(iter(ag.values()))['images']} images | same top-1 | "
                  + " | ".join(keys) + " | meets |")
            print("|---" * (3 + len(keys)) + "|")
            for n, a in ag.items():
                cells = " | ".join(f"{a['worst_corr'][k]:.4f}" for k in keys)
                print(f"| {n} | {a['top1_same']}/{a['images']} | {cells} | {'yes' if a['meets'] else 'no'} |")
        sp = r["speed"]
        bases = [k[3:] for k in next(iter(sp.values())) if k.startswith("vs ") and not k.endswith("p90")]
        print(f"\n| {r['part']} {r['model']} | median ms | p10-p90 | " + " | ".join(f"vs {b}" for b in bases)
              + " |")
        print("|---" * (3 + len(bases)) + "|")
        for n, s in sp.items():
            cells = " | ".join(
                f"{s[f'vs {b}']:.2f}x ({s[f'vs {b} p10-p90'][0]:.2f}-{s[f'vs {b} p10-p90'][1]:.2f})"
                for b in bases)
            print(f"| {n} | {s['median_ms']:.2f} | {s['p10_ms']:.1f}-{s['p90_ms']:.1f} | {cells} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("torch", "openvino", "all"), default="all")
    p.add_argument("--models", default="efficientnet-lite0,resnet50")
    p.add_argument("--agree", default="efficientnet-lite0",
                   help="models whose agreement is measured (the others: speed only)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=tuple(CLOCK), default="cpu",
                   help="cpu: the process's CPU time (use --threads 1 on a loaded machine); wall: wall clock")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    agree = set(a.agree.split(","))
    res = []
    for m in a.models.split(","):
        if a.part in ("torch", "all"):
            res.append({"part": "torch.compile",
                        **torch_part(m, a.size, a.rounds, m in agree, a.clock)})
            print_tables(res[-1:])
        if a.part in ("openvino", "all"):
            res.append({"part": "openvino", **ov_part(m, a.size, a.rounds, m in agree, a.clock)})
            print_tables(res[-1:])
    if a.json:
        Path(a.json).write_text(json.dumps({"size": a.size, "threads": a.threads, "rounds": a.rounds,
                                            "clock": a.clock,
                                            "results": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
