"""Exceptions that rtsal raises for problems a user can fix.

The CLI prints ``RtsalError`` as one line and exits 1 (2 for :class:`UsageError`); anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class RtsalError(Exception):
    """Base class for errors caused by input, environment or configuration, not by a bug."""


class UsageError(RtsalError, ValueError):
    """A bad argument value: unknown name, wrong shape, out of range."""


class ModelError(RtsalError, ValueError):
    """A model or its weights cannot be built or loaded."""


class CaptureError(RtsalError, RuntimeError):
    """A camera or live stream cannot be opened or read."""


class VideoIOError(RtsalError, OSError):
    """A video or image file cannot be read or written."""


class Interrupted(KeyboardInterrupt):
    """A run ended by SIGINT, SIGTERM or SIGHUP after finishing its outputs; ``code`` is the exit status
    (130, or 129 for SIGHUP) and the message says what was written."""

    def __init__(self, message: str = "interrupted", code: int = 130) -> None:
        super().__init__(message)
        self.code = code
