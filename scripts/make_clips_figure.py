"""The README picture of clip models and transformers: r3d_18 on 16 frames of the bundled demo clip (four of
its frames, FastCAM overlay above, LOVI below) and swin_t / vit_b_16 on the coffee photo.

Random seeded weights (no pretrained weights offline): the picture shows the mechanics (maps per frame
from one 3D forward pass, token grids as scales), not what a trained model looks at.

    python scripts/make_clips_figure.py docs/clips-transformers.jpg
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtsal.engine.clips import frame_result  # noqa: E402
from rtsal.engine.explainer import Explainer  # noqa: E402
from rtsal.io.images import read_rgb, write_rgb  # noqa: E402
from rtsal.io.video import VideoReader  # noqa: E402
from rtsal.render.views import make_view  # noqa: E402

TILE = 200


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def tile(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)


def main(out: str) -> int:
    torch.set_num_threads(2)
    with VideoReader(str(ROOT / "rtsal" / "data" / "demo.mp4")) as reader:
        frames = []
        for f in reader:
            frames.append(f.image)
            if len(frames) == 16:
                break
    clip = np.stack([cv2.resize(f, (TILE, TILE), interpolation=cv2.INTER_AREA) for f in frames])
    torch.manual_seed(0)
    overlay, lovi = make_view("overlay", "jet", 0.5), make_view("lovi", "jet", 0.5)
    top, bottom = [], []
    with Explainer("r3d_18", weights=None) as ex:
        r = ex.explain(clip)  # maps (1, 16, H, W) from one forward pass of the clip
        for t in (0, 5, 10, 15):
            f = frame_result(r, t)
            top.append(label(overlay.annotate(clip[t], f, 0), f"r3d_18 fastcam, frame {t}"))
            bottom.append(label(lovi.annotate(clip[t], f, 0), f"r3d_18 LOVI, frame {t}"))
    photo = read_rgb(ROOT / "rtsal" / "data" / "coffee.jpg")
    photo = cv2.resize(photo, (224, 224), interpolation=cv2.INTER_AREA)
    for name in ("swin_t", "vit_b_16"):
        torch.manual_seed(0)
        with Explainer(name, weights=None) as ex:
            head = ex.model.heads.head if name == "vit_b_16" else ex.model.head
            with torch.no_grad():
                head.weight.normal_(0, 0.02)  # torchvision zero-initialises ViT's head
            r = ex.explain(photo)
            top.append(label(tile(overlay.annotate(photo, r, 0)), f"{name} fastcam"))
            bottom.append(label(tile(lovi.annotate(photo, r, 0)), f"{name} LOVI"))
    grid = np.vstack([np.hstack(top), np.hstack(bottom)])
    write_rgb(Path(out), grid)
    print(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/clips-transformers.jpg"))
