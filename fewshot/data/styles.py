"""Reading the Kaggle ``styles.csv``, traps included.

The real file is not valid CSV: 22 rows carry unquoted commas inside ``productDisplayName`` (the last
column), so a CSV parser sees 11 or 12 fields. Every line is therefore split on its first 9 commas only,
and whatever follows the 9th comma is the display name. No quoting is interpreted: the real file has
none, and names such as ``Tempo 3.5" Pink Short`` hold a literal double quote.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from fewshot.utils.errors import UserError

COLUMNS: tuple[str, ...] = (
    "id", "gender", "masterCategory", "subCategory", "articleType",
    "baseColour", "season", "year", "usage", "productDisplayName",
)
_TEXT_COLUMNS = [c for c in COLUMNS if c not in ("id", "year")]


class StylesFormatError(UserError):
    """A malformed ``styles.csv``; the message names the file, the line and what is wrong."""


class DatasetLayoutError(UserError, FileNotFoundError):
    """The dataset folder lacks ``styles.csv`` or ``images/``. Also a FileNotFoundError, which it used to be."""

# What a user passes to leave malformed rows out, on the command line and in a benchmark config.
SKIP_BAD_ROWS_HINT = "pass --skip-bad-rows (benchmark config: data.skip_bad_rows = true)"


@dataclass(frozen=True)
class BadRow:
    line: int  # 1-based line number in the file; the header is line 1
    reason: str
    text: str
    label: str = ""  # its class, when the row names one ("" when it cannot be told)


def read_styles(
    path: str | os.PathLike, *, on_bad_rows: Literal["raise", "skip"] = "raise"
) -> pd.DataFrame:
    """Read a Kaggle ``styles.csv`` into a typed DataFrame, one row per product.

    Columns are those of :data:`COLUMNS`; ``id`` is ``int64``, ``year`` a nullable ``Int64`` (empty in one
    real row), the others pandas ``string`` with ``<NA>`` for empty fields. Row order is file order.

    A malformed row (fewer than 10 fields, a non-integer ``id`` or ``year``, a duplicate ``id``) raises
    :class:`StylesFormatError` naming the line, unless ``on_bad_rows="skip"``: then it is left out, a
    warning lists it, and ``df.attrs["bad_rows"]`` holds the :class:`BadRow` records.
    """
    if on_bad_rows not in ("raise", "skip"):
        raise ValueError(f"on_bad_rows must be 'raise' or 'skip', got {on_bad_rows!r}")
    path = Path(path)
    lines = _read_lines(path)
    records, bad = _parse_rows(path, lines[1:], on_bad_rows)
    df = _typed_frame(records)
    df.attrs["source"] = str(path)
    df.attrs["bad_rows"] = bad
    if bad:
        listed = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        warnings.warn(f"{path}: skipped {len(bad)} malformed row(s): {listed}{more}", stacklevel=2)
    return df


def _read_lines(path: Path) -> list[str]:
    """The file's lines, after checking it exists and starts with the Kaggle header."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: no such styles.csv; point --data (or FEWSHOT_DATA) at the dataset folder")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as err:
        # Count lines up to the bad byte, so the message points at the row to fix.
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise StylesFormatError(f"{path}, line {line}: not UTF-8 text ({err.reason} at byte {err.start}); "
                                "save the file as UTF-8") from None
    if not lines:
        raise StylesFormatError(f"{path}: the file is empty; expected the header {','.join(COLUMNS)}")
    header = tuple(h.strip() for h in lines[0].split(","))
    if header != COLUMNS:
        raise StylesFormatError(
            f"{path}, line 1: header is {','.join(header)!r}, expected {','.join(COLUMNS)!r}; "
            "is this the Kaggle Fashion Product Images styles.csv?"
        )
    return lines


def _parse_rows(path: Path, rows: list[str], on_bad_rows: str) -> tuple[list[list[str]], list[BadRow]]:
    """The fields of every well-formed data row (``rows`` start at file line 2), and the malformed ones."""
    records: list[list[str]] = []
    bad: list[BadRow] = []
    first_line_of_id: dict[int, int] = {}
    for lineno, line in enumerate(rows, start=2):
        if not line.strip():
            continue  # blank lines (a trailing newline, an editor's extra line) carry no row
        # Only the first nine commas separate fields: productDisplayName may itself contain commas.
        fields = line.split(",", len(COLUMNS) - 1)
        reason = _check(fields, first_line_of_id)
        if reason is not None:
            if on_bad_rows == "raise":
                raise StylesFormatError(
                    f"{path}, line {lineno}: {reason}: {line[:120]!r}. Fix the row, or {SKIP_BAD_ROWS_HINT} "
                    "to leave malformed rows out (they are then reported)"
                )
            bad.append(BadRow(lineno, reason, line))
            continue
        first_line_of_id[int(fields[0])] = lineno
        records.append(fields)
    return records, bad


def _typed_frame(records: list[list[str]]) -> pd.DataFrame:
    df = pd.DataFrame(records, columns=list(COLUMNS))
    df["id"] = df["id"].astype("int64")
    df["year"] = pd.array([int(y) if y.strip() else None for y in df["year"]], dtype="Int64")
    for col in _TEXT_COLUMNS:
        df[col] = df[col].str.strip().replace("", pd.NA).astype("string")
    return df


def _check(fields: list[str], first_line_of_id: dict[int, int]) -> str | None:
    """Why a split row is malformed, or None when it is fine."""
    if len(fields) < len(COLUMNS):
        return f"{len(fields)} fields, expected {len(COLUMNS)}"
    raw_id = fields[0].strip()
    if not raw_id.isdigit():
        return f"id {raw_id!r} is not a non-negative integer"
    if int(raw_id) in first_line_of_id:
        return f"duplicate id {int(raw_id)} (first on line {first_line_of_id[int(raw_id)]})"
    year = fields[7].strip()
    if year and not year.isdigit():
        return f"year {year!r} is not an integer"
    return None
