"""Hotkeys change the state they name (the state machine alone, no window)."""

from __future__ import annotations

import pytest

from rtsal.names import CMAPS as CMAP_NAMES
from rtsal.names import VIEWS as VIEW_NAMES
from rtsal.render.hotkeys import ESC, Hotkeys, LiveState

METHODS = ("fastcam", "smoe", "gradcam")


def keys(**kw) -> Hotkeys:
    state = LiveState(method="fastcam", view="overlay", cmap="jet", alpha=0.5, **kw)
    return Hotkeys(state, METHODS, VIEW_NAMES, CMAP_NAMES)


def test_m_cycles_methods_and_wraps():
    hk = keys()
    seen = [hk.state.method]
    for _ in range(3):
        assert hk.press("m") == "method"
        seen.append(hk.state.method)
    assert seen == ["fastcam", "smoe", "gradcam", "fastcam"]


def test_v_and_c_cycle_views_and_colour_maps_only():
    hk = keys()
    assert hk.press("v") == "view" and hk.state.view == VIEW_NAMES[1]
    assert hk.state.cmap == "jet" and hk.state.method == "fastcam"
    assert hk.press(ord("c")) == "cmap" and hk.state.cmap == CMAP_NAMES[1]
    assert hk.state.view == VIEW_NAMES[1]
    for _ in range(len(VIEW_NAMES) - 1):
        hk.press("v")
    assert hk.state.view == "overlay"


def test_alpha_steps_and_clamps():
    hk = keys()
    assert hk.press("+") == "alpha" and hk.state.alpha == 0.6
    hk.press("=")
    assert hk.state.alpha == 0.7
    for _ in range(10):
        hk.press("+")
    assert hk.state.alpha == 1.0
    for _ in range(25):
        hk.press("-")
    assert hk.state.alpha == 0.0


def test_digits_pin_the_ranked_class_and_zero_follows_top1():
    hk = keys()
    topk = [281, 285, 282, 287, 999]
    assert hk.press("2", topk=topk) == "target" and hk.state.target == 285
    assert hk.press("5", topk=topk) == "target" and hk.state.target == 999
    assert hk.press("3", topk=topk[:2]) is None and hk.state.target == 999  # no 3rd class: unchanged
    assert hk.press("1", topk=topk) == "target" and hk.state.target == 281
    assert hk.press("0") == "target" and hk.state.target is None


def test_snapshot_pause_help_quit():
    hk = keys()
    assert hk.press("s") == "snapshot" and hk.press("s") == "snapshot" and hk.state.snapshots == 2
    assert hk.press(" ") == "pause" and hk.state.paused
    assert hk.press(ord(" ")) == "pause" and not hk.state.paused
    assert hk.press("h") == "help" and hk.state.help
    assert not hk.state.quit
    assert hk.press("q") == "quit" and hk.state.quit


@pytest.mark.parametrize("key", ["q", ESC, ord("q"), ord("Q") | 0x100000])
def test_quit_keys(key):
    hk = keys()
    assert hk.press(key) == "quit" and hk.state.quit


def test_other_keys_change_nothing():
    hk = keys()
    before = repr(hk.state)
    assert hk.press(-1) is None  # cv2.waitKey: no key
    assert hk.press("x") is None and hk.press(ord("z")) is None
    assert repr(hk.state) == before
