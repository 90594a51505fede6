"""What a catalogue left out of what ``--data`` holds, grouped by reason: rows whose image file is missing,
malformed rows skipped, class folders without an image, files that are not images, corrupt images, and the
classes that vanish because every one of their rows was left out.

:func:`left_out` reads a :class:`~fewshot.data.catalog.Catalog` (best one served from the image cache, which
alone knows the corrupt images) and decodes nothing; :class:`LeftOut` says each group in one line (the screen)
and as a dict (a run's record), every item named.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from fewshot.data.catalog import Catalog

# what a row whose file is missing is, by layout
_MISSING = {"kaggle": ("rows of styles.csv whose image file is missing", "row of styles.csv whose image file is missing"),
            "manifest": ("rows of the manifest whose image file is missing", "row of the manifest whose image file is "
                                                                             "missing"),
            "imagefolder": ("listed files that do not exist (dangling links)", "listed file that does not exist (a "
                                                                               "dangling link)")}


@dataclass(frozen=True)
class LeftOut:
    """One reason and the items it left out. ``items``: each named (a path, a line of a file, a class);
    ``details``: empty, or one more word per item (why a file is corrupt, what a vanished class held)."""

    reason: str
    items: tuple[str, ...]
    details: tuple[str, ...] = ()
    one: str = ""  # the reason for a single item ("corrupt image"), when it is not ``reason`` itself

    def line(self, shown: int = 3) -> str:
        """``"2 corrupt images (cannot be decoded): img/a.png, img/b.png"``: the count, the reason, the first
        ``shown`` items (with their detail when it is short)."""
        named = [f"{item} ({detail})" if detail and len(detail) <= 60 else item
                 for item, detail in zip(self.items[:shown], (*self.details, *[""] * shown))]
        more = f" and {len(self.items) - shown} more" if len(self.items) > shown else ""
        reason = self.one if len(self.items) == 1 and self.one else self.reason
        return f"{len(self.items)} {reason}: {', '.join(named)}{more}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "count": len(self.items), "line": self.line(),
                               "items": list(self.items)}
        if self.details:
            out["details"] = list(self.details)
        return out


def left_out(ds: Catalog) -> list[LeftOut]:
    """Every group of items ``ds`` left out, in the order they are found (reading, then decoding); empty when
    nothing was."""
    groups: list[LeftOut] = []
    missing = ds.missing
    if len(missing):
        many, one = _MISSING.get(ds.layout, ("rows whose image file is missing", "row whose image file is missing"))
        groups.append(LeftOut(many, tuple(missing["path"].astype(str)), tuple(_labels(missing)), one))
    if ds.bad_rows:
        groups.append(LeftOut("malformed rows skipped (data.skip_bad_rows)",
                              tuple(f"line {b.line}" for b in ds.bad_rows), tuple(b.reason for b in ds.bad_rows),
                              "malformed row skipped (data.skip_bad_rows)"))
    empty = list(getattr(ds, "empty_classes", []))
    if empty:
        groups.append(LeftOut("class folders without an image", tuple(empty), one="class folder without an image"))
    skipped = list(getattr(ds, "skipped_files", []))
    if skipped:
        groups.append(LeftOut("files that are not images (by their suffix)", tuple(skipped),
                              one="file that is not an image (by its suffix)"))
    corrupt = ds.corrupt_rows
    if len(corrupt):
        groups.append(LeftOut("corrupt images (cannot be decoded)", tuple(corrupt["path"].astype(str)),
                              tuple(ds.corrupt.get(int(i), "") for i in corrupt["id"]),
                              "corrupt image (cannot be decoded)"))
    vanished = vanished_classes(ds)
    if vanished:
        groups.append(LeftOut("classes left without a usable image", tuple(vanished), tuple(vanished.values()),
                              "class left without a usable image"))
    return groups


def vanished_classes(ds: Catalog) -> dict[str, str]:
    """{class: what its rows were} for the classes of the rows left out (missing files, corrupt images,
    malformed rows that name a class) that no usable row has: they are in the data, and in no protocol."""
    kept = set(ds.classes)
    lost: dict[str, Counter] = {}
    labels = [(label, "file missing") for label in _labels(ds.missing) if len(ds.missing)]
    labels += [(label, "corrupt") for label in _labels(ds.corrupt_rows) if len(ds.corrupt_rows)]
    labels += [(b.label, "malformed") for b in ds.bad_rows]
    for label, what in labels:
        if label and label not in kept:
            lost.setdefault(label, Counter())[what] += 1
    return {c: _rows_words(counts) for c, counts in sorted(lost.items())}


def _rows_words(counts: Counter) -> str:
    """``"2 rows, file missing"``, ``"3 rows: 2 file missing, 1 corrupt"``."""
    total = sum(counts.values())
    rows = f"{total} row{'s' if total > 1 else ''}"
    if len(counts) == 1:
        return f"{rows}, {next(iter(counts))}"
    return f"{rows}: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))


def _labels(rows: pd.DataFrame) -> list[str]:
    return ["" if pd.isna(v) else str(v) for v in rows["label"].astype(object)] if "label" in rows else [""] * len(rows)
