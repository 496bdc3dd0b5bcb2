"""``rtsal cache``: list the compiled-graph cache (entries and sizes) or empty it with ``--clear``."""

from __future__ import annotations

import argparse
import time


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "cache",
        help="list or clear the compiled-graph cache",
        description="List the compiled graphs rtsal keeps on disk (one per model, input size and settings), "
        "with their sizes, or remove them all with --clear. The folder is --cache-dir, else "
        "$RTSAL_CACHE_DIR, else $XDG_CACHE_HOME/rtsal, else ~/.cache/rtsal.",
    )
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="the cache folder to use")
    p.add_argument("--clear", action="store_true", help="remove every entry")
    return p


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from rtsal.engine.cache import Cache

    cache = Cache(args.cache_dir)
    if args.clear:
        count, freed = cache.clear()
        print(f"cache {cache.root}: removed {count} files, {_size(freed)}")
        return 0
    entries = cache.entries()
    print(f"cache {cache.root}: {len(entries)} entries, {_size(sum(e.bytes for e in entries))}")
    for e in entries:
        shape = "x".join(str(v) for v in e.shape) or "?"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)) if e.created else "?"
        state = "" if e.valid else "  (incomplete or foreign: rebuilt when needed)"
        print(f"  {e.key}  {_size(e.bytes):>10}  {when}  {e.model}  {shape}  {e.method}{state}")
    return 0
