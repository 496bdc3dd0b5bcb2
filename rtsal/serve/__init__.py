"""``rtsal serve``: the live overlay in a browser tab (a front end, beside the window of ``rtsal webcam``).

- :mod:`rtsal.serve.protocol`: what crosses the WebSocket and the upload route, checked (torch-free);
- :mod:`rtsal.serve.engine`: the frame layer on the live pipeline, fed by the pages' frames;
- :mod:`rtsal.serve.uploads`: an uploaded image or short video -> its explanation;
- :mod:`rtsal.serve.app`: the Starlette app behind the token, Host and Origin guard;
- :mod:`rtsal.serve.server`: uvicorn, the private folder and the signals;
- ``static/``: the page (plain HTML, CSS and JavaScript; nothing from the internet).

The web framework is an extra (``pip install "rtsal[serve]"``): :func:`require_web` says so in one line.
"""

from __future__ import annotations

from rtsal.errors import UsageError

__all__ = ["EXTRA_HINT", "require_web"]

EXTRA_HINT = 'pip install "rtsal[serve]"'


def require_web() -> None:
    """Raise one line naming the extra when starlette, uvicorn or websockets is missing."""
    for name in ("starlette", "uvicorn", "websockets"):
        try:
            __import__(name)
        except ImportError:
            raise UsageError(
                f"rtsal serve needs a web server ({name} is not installed): {EXTRA_HINT}"
            ) from None
