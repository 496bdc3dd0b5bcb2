"""Hotkeys of the live window as a pure state machine: ``press(key) -> action``; no window needed to test it.

=====  ==========================================================
m      cycle the saliency method
v      cycle the view (overlay, lovi, layers, side, map)
c      cycle the colour map
+ -    map opacity up / down (``=`` also raises it)
1-5    pin the class ranked 1..5 now (the CAM keeps explaining it)
0      follow the top-1 class again
s      save a snapshot PNG
space  pause / resume
h      show / hide this help
q Esc  quit
=====  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HELP_LINES = (
    "m  method          v  view",
    "c  colour map      + -  opacity",
    "1-5  pin class     0  follow top-1",
    "s  snapshot        space  pause",
    "h  help            q Esc  quit",
)

ESC = 27
ALPHA_STEP = 0.1


@dataclass
class LiveState:
    """What the viewer shows now; hotkeys change it, the infer and render stages read it."""

    method: str
    view: str
    cmap: str
    alpha: float
    target: int | None = None  # class index the CAM explains; None: follow the top-1 class
    paused: bool = False
    help: bool = False
    quit: bool = False
    snapshots: int = 0  # snapshot requests so far; the renderer saves one per increase


def _cycle(options: Sequence[str], current: str) -> str:
    if not options:
        return current
    try:
        return options[(list(options).index(current) + 1) % len(options)]
    except ValueError:
        return options[0]


class Hotkeys:
    """Maps key presses to changes of a :class:`LiveState` (in place)."""

    def __init__(self, state: LiveState, methods: Sequence[str], views: Sequence[str],
                 cmaps: Sequence[str]) -> None:
        self.state = state
        self.methods = tuple(methods)
        self.views = tuple(views)
        self.cmaps = tuple(cmaps)

    def press(self, key: int | str, topk: Sequence[int] = ()) -> str | None:
        """Apply one key (a character, or a code from ``cv2.waitKey``); ``topk`` is the class indices of the
        frame on screen, best first (for 1-5). Returns the name of what changed, or None for other keys."""
        if isinstance(key, int):
            if key < 0:
                return None
            key &= 0xFF
            if key == ESC:
                key = "esc"
            else:
                key = chr(key)
        s = self.state
        if key in ("q", "Q", "esc"):
            s.quit = True
            return "quit"
        if key == "m":
            s.method = _cycle(self.methods, s.method)
            return "method"
        if key == "v":
            s.view = _cycle(self.views, s.view)
            return "view"
        if key == "c":
            s.cmap = _cycle(self.cmaps, s.cmap)
            return "cmap"
        if key in ("+", "="):
            s.alpha = round(min(1.0, s.alpha + ALPHA_STEP), 2)
            return "alpha"
        if key in ("-", "_"):
            s.alpha = round(max(0.0, s.alpha - ALPHA_STEP), 2)
            return "alpha"
        if key in "12345" and len(key) == 1:
            rank = int(key) - 1
            if rank >= len(topk):
                return None
            s.target = int(topk[rank])
            return "target"
        if key == "0":
            s.target = None
            return "target"
        if key == "s":
            s.snapshots += 1
            return "snapshot"
        if key == " ":
            s.paused = not s.paused
            return "pause"
        if key == "h":
            s.help = not s.help
            return "help"
        return None
