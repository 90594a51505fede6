"""The Kaggle *Fashion Product Images* layout as a PyTorch dataset (the Kaggle reader of
:class:`fewshot.data.catalog.Catalog`).

``FashionProducts(root)`` lists the products of ``root/styles.csv`` whose ``root/images/<id>.jpg``
exists; it decodes nothing, so ``labels`` (and its torchvision alias ``targets``) cost no image I/O.
``.cached(size)`` returns the same products served from the decoded-image cache (:mod:`fewshot.data.cache`),
without those whose JPEG turns out to be corrupt.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from fewshot.data import cache as image_cache
from fewshot.data.catalog import SYNTHETIC_MARKER, Catalog, EmptyDatasetError
from fewshot.data.styles import COLUMNS, DatasetLayoutError, read_styles

__all__ = ["SYNTHETIC_MARKER", "EmptyDatasetError", "FashionProducts"]


class FashionProducts(Catalog):
    """Products that have an image, labelled by ``articleType``.

    Attributes (besides :class:`~fewshot.data.catalog.Catalog`'s):
        root: the dataset folder (``styles.csv`` + ``images/``).
        styles: one row per usable product (columns of :data:`fewshot.data.styles.COLUMNS`), index 0..N-1;
            ``table`` holds the same rows with the catalogue's columns (``label`` = articleType, ``name`` =
            productDisplayName or "", ``path`` = images/<id>.jpg) added.
        names: the ``productDisplayName`` of every product (list of N str), "" where it is empty or missing:
            the text branch's input, read without decoding an image.
        missing: rows of styles.csv whose image file does not exist (reported, excluded).
        corrupt: products whose JPEG could not be decoded, id -> reason (known once the cache is built;
            empty before: see :meth:`recorded_corrupt` for what an earlier build found).
    """

    layout = "kaggle"
    items = "products"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        on_bad_rows: Literal["raise", "skip"] = "raise",
        transform: Callable[[Any], Any] | None = None,
        warn: bool = True,
    ) -> None:
        root = Path(root)
        if not (root / "images").is_dir():
            raise DatasetLayoutError(
                f"{root}: no images/ folder. Point --data (or FEWSHOT_DATA) at a folder holding "
                "styles.csv and images/<id>.jpg, or make a synthetic one with `fewshot synth --out DIR`."
            )
        self._start(root, root, transform)
        all_rows = read_styles(self.root / "styles.csv", on_bad_rows=on_bad_rows)
        present = {e.name for e in os.scandir(self.root / "images")}
        has_image = np.fromiter((f"{i}.jpg" in present for i in all_rows["id"]), bool, len(all_rows))
        self.n_rows = len(all_rows)
        self.bad_rows = all_rows.attrs.get("bad_rows", [])
        self._finish(_with_catalog_columns(all_rows), has_image, warn=warn, what="row(s) of styles.csv")

    def _why_empty(self, n_rows: int) -> str:
        """The message for a folder without a single usable product, saying which of three cases it is."""
        where = f"{self.root}: no usable products"
        if n_rows:
            example = self.missing["id"].iloc[0]
            return (f"{where}: none of the {n_rows} row(s) of styles.csv has its image file (e.g. "
                    f"images/{example}.jpg is missing); is images/ the Kaggle image folder?")
        if self.bad_rows:
            return (f"{where}: all {len(self.bad_rows)} row(s) of styles.csv are malformed and were skipped "
                    f"(first: line {self.bad_rows[0].line}, {self.bad_rows[0].reason}); fix the rows")
        return (f"{where}: styles.csv has a header but no data rows; point --data (or FEWSHOT_DATA) at the "
                "complete dataset")

    def _set_rows(self, table: pd.DataFrame) -> None:
        super()._set_rows(table)
        self.styles = table[list(COLUMNS)]

    def _image_files(self) -> image_cache.ImageFiles | None:
        return None  # images/<id>.jpg, keyed by styles.csv and the images/ listing as always

    def cached(self, size: tuple[int, int] = (80, 60), **kwargs: Any) -> FashionProducts:
        return super().cached(size, **kwargs)  # type: ignore[return-value]


def _with_catalog_columns(styles: pd.DataFrame) -> pd.DataFrame:
    """``styles`` with the catalogue's canonical columns added: label, name, path."""
    return styles.assign(label=styles["articleType"],
                         name=styles["productDisplayName"].fillna("").astype(str).tolist(),
                         path=[f"images/{i}.jpg" for i in styles["id"].tolist()])
