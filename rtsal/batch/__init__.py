"""``rtsal batch``: a whole archive of videos explained on a Dask cluster, resumable, nothing lost.

One file is one task (:mod:`rtsal.batch.worker`); :mod:`rtsal.batch.cluster` owns the local cluster or the
client of an existing one (or runs in this process when Dask is missing); :mod:`rtsal.batch.manifest` keeps
``OUTDIR/manifest.jsonl`` and decides what a resumed run skips; :mod:`rtsal.batch.job` runs it all and
:mod:`rtsal.batch.report` prints the table. Torch-free at import.
"""

from __future__ import annotations

from rtsal.batch.job import BatchOptions, run_batch
from rtsal.batch.report import BatchReport, format_report
from rtsal.batch.worker import Engine, EngineBuilder

__all__ = ["BatchOptions", "BatchReport", "Engine", "EngineBuilder", "format_report", "run_batch"]
