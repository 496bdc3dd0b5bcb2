"""Which optical flow the temporal-stability measure uses: OpenCV's DIS (three presets) against Farneback,
on clips made from photos (skimage.data) by known pans and zooms (rtsal.eval.motion), at the working size
of the measure (long side 256, a 720p frame's maps).

For each method: endpoint error of the flow against the true flow (pixels, median over pairs), the
warping error of a map that moves exactly with the scene (what the measure reports for a perfectly stable
map: the lower the better, 0 is ideal), the fraction of pixels the forward-backward check keeps, and the
milliseconds per flow (median, interleaved rounds). Prints a table and writes JSON.

    python benchmarks/temporal_flow.py [--json benchmarks/results/temporal-flow.json]
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
from skimage import data

from rtsal.eval.motion import MovingCamera
from rtsal.eval.temporal import consistent_mask, to_grey, warp, warp_error

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
MOTIONS = {  # (pan dx, dy in photo pixels per frame, zoom per frame)
    "pan right 3": ((3.0, 0.0), 1.0),
    "pan diagonal 6": ((6.0, 4.0), 1.0),
    "zoom in 2%": ((0.0, 0.0), 1.02),
    "zoom out 3% + pan": ((4.0, -2.0), 1 / 1.03),
}
SIZE = (144, 256)


def methods() -> dict[str, object]:
    out = {}
    for name, preset in (
        ("dis-ultrafast", cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
        ("dis-fast", cv2.DISOPTICAL_FLOW_PRESET_FAST),
        ("dis-medium", cv2.DISOPTICAL_FLOW_PRESET_MEDIUM),
    ):
        dis = cv2.DISOpticalFlow_create(preset)
        out[name] = dis.calc
    out["farneback"] = lambda a, b, _=None: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.1, 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/results/temporal-flow.json")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    fns = methods()
    pairs = []
    for photo in PHOTOS:
        img = getattr(data, photo)()
        img = img if img.ndim == 3 else np.stack([img] * 3, -1)
        smap = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255, (0, 0), 12)
        for motion, (pan, zoom) in MOTIONS.items():
            cam = MovingCamera(img.shape[:2], SIZE, pan, zoom)
            for t in (0, 3):
                a, b = (to_grey(cam.render(img, k), SIZE) for k in (t, t + 1))
                pairs.append((photo, motion, a, b, cam.flow(t), cam.render(smap, t), cam.render(smap, t + 1)))
    rows = {name: {"epe": [], "error": [], "valid": [], "ms": []} for name in fns}
    for _ in range(args.rounds):  # interleaved: each round times every method on every pair
        for name, fn in fns.items():
            for _photo, _motion, a, b, true, m0, m1 in pairs:
                t0 = time.perf_counter()
                fw = fn(a, b, None)
                rows[name]["ms"].append((time.perf_counter() - t0) * 1e3)
                bw = fn(b, a, None)
                if len(rows[name]["epe"]) < len(pairs):
                    inside = warp(np.zeros(a.shape, np.float32), true)[1]
                    ok = consistent_mask(fw, bw) & inside
                    rows[name]["epe"].append(float(np.linalg.norm(fw - true, axis=-1)[inside].mean()))
                    step = warp_error(m0, m1, fw, bw)
                    rows[name]["error"].append(step.error)
                    rows[name]["valid"].append(float(ok.mean()))
    static = {k: float(np.median(v["ms"])) for k, v in rows.items()}
    print(
        f"flow at {SIZE[1]}x{SIZE[0]}, {len(pairs)} pairs "
        f"({len(PHOTOS)} photos x {len(MOTIONS)} motions x 2),"
        f" {args.rounds} interleaved rounds, 1 OpenCV thread (machine shared with other jobs)"
    )
    print(
        f"{'method':15} {'EPE px (median)':>16} {'EPE px (mean)':>14} {'warp error of a moving map':>27} "
        f"{'kept %':>7} {'ms/flow':>8}"
    )
    result = {"size": SIZE, "pairs": len(pairs), "rounds": args.rounds, "methods": {}}
    for name, r in rows.items():
        rec = {
            "epe_median": float(np.median(r["epe"])),
            "epe_mean": float(np.mean(r["epe"])),
            "warp_error_mean": float(np.nanmean(r["error"])),
            "valid_mean": float(np.mean(r["valid"])),
            "ms_median": static[name],
            "ms_p90": float(np.percentile(r["ms"], 90)),
        }
        result["methods"][name] = rec
        print(
            f"{name:15} {rec['epe_median']:16.3f} {rec['epe_mean']:14.3f} {rec['warp_error_mean']:27.4f} "
            f"{100 * rec['valid_mean']:7.1f} {rec['ms_median']:8.2f}"
        )
    ident = [float(np.abs(m0 - m1).mean()) for *_, m0, m1 in pairs]
    print(f"{'no flow':15} {'':16} {'':14} {np.mean(ident):27.4f}")
    result["no_flow_error_mean"] = float(np.mean(ident))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
