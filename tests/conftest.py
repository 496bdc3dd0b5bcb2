"""Shared fixtures: the bundled real photographs and one shared pretrained explainer."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from helpers import photo

# The live and video commands build the compiled engine in the background by default; the CLI tests run
# eager (tests/test_compiled.py builds what it needs itself).
os.environ.setdefault("RTSAL_COMPILE", "0")


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


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command builds its model (checks must come first). Every command module is
    imported before patching, so none keeps the patched function after the test."""
    import importlib

    from rtsal.cli import COMMANDS

    def refuse(args):
        pytest.fail("the model was loaded")

    modules = [importlib.import_module(f"rtsal.commands.{name}") for name in ("common", *COMMANDS)]
    for module in modules:  # all imported first: none may bind the patched function at its import
        if hasattr(module, "make_runner"):
            monkeypatch.setattr(module, "make_runner", refuse)
