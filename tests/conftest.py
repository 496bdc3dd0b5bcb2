"""Shared fixtures: the bundled real photographs and one shared pretrained explainer."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "rtsal" / "data"

# The live and video commands build the compiled engine in the background by default; the CLI tests run
# eager (tests/test_compiled.py builds what it needs itself).
os.environ.setdefault("RTSAL_COMPILE", "0")


def photo(name: str) -> np.ndarray:
    """A bundled photograph as RGB uint8 (H, W, 3)."""
    image = cv2.imread(str(DATA / f"{name}.jpg"))
    assert image is not None, name
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return photo("coffee")


@pytest.fixture(scope="session")
def lite0():
    """The embedded pretrained EfficientNet-Lite0 explainer, shared by the tests that only read from it."""
    from rtsal.engine.explainer import Explainer

    with Explainer("efficientnet-lite0") as explainer:
        yield explainer
