"""Where the speed scripts write their tables: a fresh run folder unless told otherwise.

The committed tables in ``benchmarks/results/`` are refreshed only on purpose (``--out benchmarks/results``);
a plain run must never overwrite them with numbers from whatever machine it happens to run on.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

OUT_HELP = ("folder to write the table into (default: a fresh runs/<script>-<UTC timestamp>/; "
            "--out benchmarks/results refreshes the committed table; '' writes nothing)")


def output_folder(script: str, out: str | None) -> Path | None:
    """``out`` when given (created), None for ``''`` (write nothing), else a new ``runs/<script>-<stamp>/``
    under the working directory (the stamp in UTC, as ``benchmarks.run`` names its run folders)."""
    if out == "":
        return None
    if out is None:
        out = Path("runs") / f"{script}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
