"""The ``rtsal`` command line: ``main(argv) -> exit code``.

Each subcommand lives in ``rtsal/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``.
Nothing here imports torch, so ``rtsal --help`` is instant. Exit codes: 0 success, 1 runtime error
(one line on stderr, no traceback unless ``--debug``), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from rtsal import __version__
from rtsal.errors import Interrupted, RtsalError, UsageError

COMMANDS = ("image", "demo", "layers", "webcam", "eval", "video", "batch", "bench", "export", "cache",
            "serve")


class Parser(argparse.ArgumentParser):
    """argparse with a bad argument reported as one line (and a pointer to ``--help``), exit 2, instead of
    the whole usage block before it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rtsal",
        description="Real-time saliency overlays for PyTorch image classifiers (FastCAM: one forward pass).",
    )
    parser.add_argument("--version", action="version", version=f"rtsal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"rtsal.commands.{name}")
        p = module.add_parser(sub)
        p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except Interrupted as exc:
        print(f"rtsal {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("rtsal: interrupted", file=sys.stderr)
        return 130
    except RtsalError as exc:
        if args.debug:
            raise
        print(f"rtsal {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


def entry() -> None:
    """Console-script entry point (``rtsal``, ``python -m rtsal``): the process is ours, so the OpenMP
    defaults measured for the pipeline are set here, before torch loads (never in ``main``, which library
    code and tests call)."""
    from rtsal.interrupts import exit_after_interrupt
    from rtsal.streams import set_cli_openmp_defaults

    set_cli_openmp_defaults()
    exit_after_interrupt()
    sys.exit(main())


if __name__ == "__main__":
    entry()
