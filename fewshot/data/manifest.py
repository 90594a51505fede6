"""A CSV manifest as a :class:`~fewshot.data.catalog.Catalog`: one row per image.

Columns (a header line names them, in any order):

- ``path`` (required): the image file, relative to the CSV's folder (or absolute); any format PIL reads.
- ``label`` (required): the class name.
- ``split`` (optional): ``train`` or ``test`` (any case); the transfer protocol's split when present.
- ``text`` (optional): a title or description, the text branch's input ("" when blank).
- any other column (``group``, ``year``, ``source``...): kept, and usable as a split key (``data.split_key``).

``id`` and ``name`` are the catalogue's own columns and cannot be manifest columns. The file is read as CSV
proper (quoted fields may hold commas). A malformed row (wrong number of fields, a blank path or label, a
split that is not train or test, a path listed twice) stops the reader with one line naming it, or, with
``on_bad_rows="skip"``, is left out and reported, as for the Kaggle ``styles.csv``. A row whose file does not
exist is left out and reported.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from fewshot.data.catalog import Catalog
from fewshot.data.styles import SKIP_BAD_ROWS_HINT, BadRow
from fewshot.utils.errors import UserError

REQUIRED = ("path", "label")
RESERVED = ("id", "name")
SPLIT_VALUES = ("train", "test")


class ManifestFormatError(UserError):
    """A malformed manifest; the message names the file, the line and what is wrong."""


class ManifestCatalog(Catalog):
    """Attributes (besides :class:`~fewshot.data.catalog.Catalog`'s): ``columns``, the manifest's header."""

    layout = "manifest"

    def __init__(self, path: str | os.PathLike, *, on_bad_rows: Literal["raise", "skip"] = "raise",
                 transform: Callable[[Any], Any] | None = None, warn: bool = True) -> None:
        if on_bad_rows not in ("raise", "skip"):
            raise ValueError(f"on_bad_rows must be 'raise' or 'skip', got {on_bad_rows!r}")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such manifest file; point --data at a CSV file with columns path,label")
        self._start(path, path.parent, transform)
        self._bytes = path.read_bytes()
        header, records, bad = _parse(path, self._bytes, on_bad_rows)
        self.columns = header
        self.bad_rows = bad
        self.n_rows = len(records) + len(bad)
        if bad and warn:
            listed = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:10])
            warnings.warn(f"{path}: skipped {len(bad)} malformed row(s): {listed}"
                          + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""), stacklevel=2)
        table = _table(header, records)
        has_image = np.fromiter((os.path.isfile(self.base / p) for p in table["path"]), bool, len(table))
        self._finish(table, has_image, warn=warn, what="row(s) of the manifest")

    def _why_empty(self, n_rows: int) -> str:
        where = f"{self.root}: no usable images"
        if n_rows:
            example = self.missing["path"].iloc[0]
            return (f"{where}: none of the {n_rows} row(s) has its image file (e.g. {example} is missing; paths are "
                    f"relative to {self.base})")
        if self.bad_rows:
            return (f"{where}: all {len(self.bad_rows)} row(s) are malformed and were skipped (first: line "
                    f"{self.bad_rows[0].line}, {self.bad_rows[0].reason}); fix the rows")
        return f"{where}: the manifest has a header but no rows"

    def _key_bytes(self) -> bytes:
        return b"manifest;" + self._bytes

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "columns": list(self.columns)}


def _parse(path: Path, data: bytes, on_bad_rows: str) -> tuple[list[str], list[list[str]], list[BadRow]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestFormatError(f"{path}, line {line}: not UTF-8 text ({err.reason} at byte {err.start}); save "
                                  "the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ManifestFormatError(f"{path}: the file is empty; expected a header line with columns path,label "
                                  "(optional: split, text, others)") from None
    except csv.Error as err:
        raise ManifestFormatError(f"{path}, line 1: not CSV ({err})") from None
    lacking = [c for c in REQUIRED if c not in header]
    if lacking:
        raise ManifestFormatError(f"{path}, line 1: header {','.join(header)!r} has no {' and no '.join(lacking)} "
                                  "column; a manifest needs columns path and label (optional: split, text, others)")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice or "" in header:
        what = f"column(s) {', '.join(twice)} appear twice" if twice else "a column has no name"
        raise ManifestFormatError(f"{path}, line 1: {what} in the header; give every column one unique name")
    clash = [c for c in RESERVED if c in header]
    if clash:
        raise ManifestFormatError(f"{path}, line 1: column(s) {', '.join(clash)} are the catalogue's own; rename "
                                  "them (the title of an image goes in a 'text' column)")
    col = {h: i for i, h in enumerate(header)}
    records: list[list[str]] = []
    bad: list[BadRow] = []
    first_line: dict[str, int] = {}
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise ManifestFormatError(f"{path}, line {reader.line_num}: not CSV ({err})") from None
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue  # blank lines carry no row
        reason = _check(fields, header, col, first_line)
        if reason is not None:
            shown = ",".join(fields)
            if on_bad_rows == "raise":
                raise ManifestFormatError(f"{path}, line {line}: {reason}: {shown[:120]!r}. Fix the row, or "
                                          f"{SKIP_BAD_ROWS_HINT} to leave malformed rows out (they are then reported)")
            label = fields[col["label"]].strip() if len(fields) == len(header) else ""
            bad.append(BadRow(line, reason, shown, label))
            continue
        first_line[os.path.normpath(fields[col["path"]].strip())] = line
        records.append([f.strip() for f in fields])
    return header, records, bad


def _check(fields: list[str], header: list[str], col: dict[str, int], first_line: dict[str, int]) -> str | None:
    """Why a manifest row is malformed, or None when it is fine."""
    if len(fields) != len(header):
        return f"{len(fields)} fields, expected {len(header)} ({','.join(header)})"
    where = fields[col["path"]].strip()
    if not where:
        return "path is empty"
    if not fields[col["label"]].strip():
        return "label is empty"
    if "split" in col and fields[col["split"]].strip().casefold() not in SPLIT_VALUES:
        return (f"split {fields[col['split']].strip()!r} is not train or test (to split on other values, name "
                "another column as data.split_key)")
    key = os.path.normpath(where)
    if key in first_line:
        return f"duplicate path {where} (first on line {first_line[key]})"
    return None


def _table(header: list[str], records: list[list[str]]) -> pd.DataFrame:
    columns = list(zip(*records)) if records else [() for _ in header]
    raw = {h: list(values) for h, values in zip(header, columns)}
    table = pd.DataFrame({
        "id": np.arange(len(records), dtype=np.int64),
        "path": raw["path"],
        "label": pd.array(raw["label"], dtype="string"),
        "name": raw.get("text", [""] * len(records)),
    })
    if "split" in raw:
        table["split"] = pd.array([v.casefold() for v in raw["split"]], dtype="string")
    for h in header:
        if h not in ("path", "label", "split"):
            table[h] = pd.Series(raw[h], dtype="string").replace("", pd.NA).array if h != "text" else raw[h]
    return table

