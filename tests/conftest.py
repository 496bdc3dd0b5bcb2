"""Shared fixtures: the bundled real photographs and one shared pretrained explainer."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from helpers import photo


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for one test, whatever this process inherited: a process started with
    SIGINT ignored (a background job, ``nohup``, some CI runners) never sees ``_thread.interrupt_main()``,
    and a test waiting for that KeyboardInterrupt would hang."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return photo("coffee")


@pytest.fixture(scope="session")
def lite0():
    """The embedded pretrained EfficientNet-Lite0 explainer, shared by the tests that only read from it."""
    from rtsal.engine.explainer import Explainer

    with Explainer("efficientnet-lite0") as explainer:
        yield explainer
