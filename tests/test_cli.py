"""The command line as a user runs it: image, layers, demo photos, errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision

from rtsal.cli import main

DATA = Path(__file__).resolve().parents[1] / "rtsal" / "data"


def rtsal(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtsal", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_imports_no_torch():
    code = (
        "import sys, rtsal.cli; rtsal.cli.build_parser(); "
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert rtsal("--help").returncode == 0


def test_image_writes_one_png_per_input_and_prints_top5(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["image", str(DATA / "coffee.jpg"), str(DATA / "chelsea.jpg"), "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "coffee.jpg: espresso" in text and text.count("%") >= 10
    coffee = cv2.imread(str(out / "coffee.png"))
    original = cv2.imread(str(DATA / "coffee.jpg"))
    assert coffee.shape == original.shape
    assert np.abs(coffee.astype(int) - original.astype(int)).mean() > 10  # the map is really blended in
    assert (out / "chelsea.png").is_file()


@pytest.mark.parametrize(("view", "width_factor"), [("side", 3), ("lovi", 1), ("map", 1)])
def test_image_views(tmp_path, view, width_factor):
    rc = main(["image", str(DATA / "rocket.jpg"), "-o", str(tmp_path), "--view", view, "--no-labels"])
    assert rc == 0
    out = cv2.imread(str(tmp_path / "rocket.png"))
    assert out.shape == (427, 640 * width_factor, 3)


def test_image_layers_grid_and_directories(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee", "astronaut"):
        (photos / f"{name}.jpg").write_bytes((DATA / f"{name}.jpg").read_bytes())
    (photos / "notes.txt").write_text("not an image")
    rc = main(["image", str(photos), "-o", str(tmp_path / "out"), "--view", "layers", "--method", "smoe"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["astronaut.png", "coffee.png"]
    grid = cv2.imread(str(tmp_path / "out" / "coffee.png"))
    assert grid.shape[0] >= 2 * 48 and grid.shape[1] >= 2 * 64  # 5 scales + SMOE + CAM + method = 3x3 tiles


def test_layers_command(capsys):
    assert main(["layers", "resnet50"]) == 0
    out = capsys.readouterr().out
    for row in ("relu", "layer1", "layer4", "2048", "7x7", "closed form"):
        assert row in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["image", "missing.jpg", "-o", "out"], 1, "no such file: missing.jpg"),
        (
            ["image", "{data}/coffee.jpg", "-o", "out", "--model", "resnet9000"],
            2,
            "unknown model 'resnet9000'",
        ),
        (
            ["image", "{data}/coffee.jpg", "-o", "out", "--model", "resnet18", "--weights", "nope.pth"],
            1,
            "weights file not found: nope.pth",
        ),
        (
            [
                "image",
                "{data}/coffee.jpg",
                "-o",
                "out",
                "--model",
                "resnet18",
                "--weights",
                "{data}/LICENSE-PHOTOS.md",
            ],
            1,
            "not a PyTorch weights file",
        ),
        (["image", "{data}/LICENSE-PHOTOS.md", "-o", "out"], 1, "cannot read"),
        (["image", "{data}/coffee.jpg", "-o", "out", "--alpha", "3"], 2, "--alpha must be within 0..1"),
        (["image", "{data}/coffee.jpg", "-o", "out", "--method", "magic"], 2, "invalid choice"),
        (["image", "{data}/coffee.jpg"], 2, "required: -o/--output"),
        (["video", "in.mp4", "-o", "o.mp4", "--view", "bogus"], 2, "invalid choice: 'bogus'"),
        (["no-such-command"], 2, "invalid choice: 'no-such-command'"),
    ],
)
def test_errors_are_one_line_with_exit_codes(tmp_path, args, code, message):
    args = [a.format(data=DATA) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "rtsal", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # argparse's errors too: no usage block before them


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = rtsal("image", str(DATA / "coffee.jpg"), "-o", str(blocker))
    assert proc.returncode == 1 and "not a directory" in proc.stderr


def test_weights_file_through_cli(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    rc = main(
        [
            "image",
            str(DATA / "coffee.jpg"),
            "-o",
            str(tmp_path / "o"),
            "--model",
            "resnet18",
            "--weights",
            str(path),
            "--method",
            "gradcam",
        ]
    )
    assert rc == 0 and (tmp_path / "o" / "coffee.png").is_file()


def test_random_weights_are_the_same_model_on_every_run():
    """`--weights none` seeds the random init: two runs (and every batch worker) explain with one model."""
    from rtsal.cli import build_parser
    from rtsal.commands.common import make_explainer

    argv = ["image", "x.jpg", "-o", "out", "--model", "resnet18", "--weights", "none", "--size", "64"]
    args = build_parser().parse_args(argv)
    torch.manual_seed(123)  # whatever the caller's generator holds
    first = make_explainer(args)
    torch.rand(7)
    second = make_explainer(args)
    try:
        a, b = first.model.state_dict(), second.model.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    finally:
        first.close()
        second.close()
