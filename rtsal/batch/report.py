"""The end-of-run table: each file's outcome, then totals, aggregate frames/s and frames/s per worker."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchReport", "format_report"]

MAX_DONE_ROWS = 40  # failures are always listed; past this many completed files, see the manifest


@dataclass
class BatchReport:
    """What one ``rtsal batch`` run did (``rows`` are the manifest's file records with a ``rel`` name)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    wall: float = 0.0
    interrupted: bool = False
    abandoned: list[str] = field(default_factory=list)
    not_started: int = 0
    mode: str = ""

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.get("status") == status)

    @property
    def frames(self) -> int:
        """Frames explained in this run (skipped files not counted)."""
        return sum(int(r.get("frames") or 0) for r in self.rows if r.get("status") == "done")

    def per_worker(self) -> dict[str, tuple[int, int, float]]:
        """worker -> (files, frames, frames/s over the seconds it spent on them)."""
        acc: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
        for r in self.rows:
            if r.get("status") == "done":
                a = acc[str(r.get("worker"))]
                a[0] += 1
                a[1] += int(r.get("frames") or 0)
                a[2] += float(r.get("seconds") or 0.0)
        return {w: (int(f), int(n), n / s if s > 0 else 0.0) for w, (f, n, s) in sorted(acc.items())}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.count("failed") else 0


def _table(head: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(head).rstrip(), line(["-" * w for w in widths]), *(line(r).rstrip() for r in rows)]


def format_report(report: BatchReport) -> str:
    """The report as text (a table of files, then totals)."""
    rows = []
    done_rows = 0
    hidden = 0
    for r in report.rows:
        status = str(r.get("status"))
        if status != "failed":
            done_rows += 1
            if done_rows > MAX_DONE_ROWS:
                hidden += 1
                continue
        if status == "failed":
            note = str(r.get("error") or "")
        elif status == "skipped":
            note = "done before, outputs unchanged"
        else:
            note = ""
        rows.append(
            [
                status,
                str(r.get("rel")),
                str(r.get("frames") or 0),
                f"{float(r.get('seconds') or 0):.1f}",
                f"{float(r.get('fps') or 0):.1f}" if status == "done" else "-",
                note,
            ]
        )
    out = _table(["status", "file", "frames", "seconds", "frames/s", "error"], rows, {2, 3, 4})
    if hidden:
        out.append(f"... and {hidden} more completed file(s): see manifest.jsonl")
    out.append("")
    fps = report.frames / report.wall if report.wall > 0 else 0.0
    out.append(
        f"{report.count('done')} done, {report.count('failed')} failed, {report.count('skipped')} skipped"
        + (f", {len(report.abandoned)} abandoned" if report.abandoned else "")
        + (f", {report.not_started} not started" if report.not_started else "")
        + f"; {report.frames} frames in {report.wall:.1f} s = {fps:.1f} frames/s ({report.mode})"
    )
    workers = report.per_worker()
    if workers:
        w_rows = [[w, str(f), str(n), f"{r:.1f}"] for w, (f, n, r) in workers.items()]
        out.append("")
        out += _table(["worker", "files", "frames", "frames/s"], w_rows, {1, 2, 3})
    return "\n".join(out)
