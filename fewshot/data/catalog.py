"""One dataset interface over every layout a user's images come in.

A :class:`Catalog` is a table with one row per usable image, whatever the layout it was read from:

- :class:`~fewshot.data.dataset.FashionProducts`: the Kaggle layout, ``styles.csv`` + ``images/<id>.jpg``;
- :class:`~fewshot.data.imagefolder.ImageFolderCatalog`: torchvision's ``ImageFolder`` layout, one folder per
  class (``DIR/<class>/...``), or ``DIR/train/<class>/...`` + ``DIR/test/<class>/...``;
- :class:`~fewshot.data.manifest.ManifestCatalog`: a CSV file with columns ``path`` and ``label`` (optional
  ``split``, ``text`` and any other column).

:func:`fewshot.data.layouts.open_dataset` picks the reader from the path. The table's canonical columns are ``id`` (int64, unique),
``path`` (the image file, relative to :attr:`Catalog.base`), ``label`` (the class name) and ``name`` (the text
branch's input, "" when there is none); every other column (Kaggle's ``year``, a manifest's ``split`` or
``group``...) can be the key of a split rule (:mod:`fewshot.data.rules`). Labels, names and counts come from the
table without decoding an image; :meth:`Catalog.cached` serves the same rows from the decoded-image cache
(:mod:`fewshot.data.cache`), without those whose file turns out to be corrupt. Nothing downstream needs to know
which layout the rows came from.
"""
from __future__ import annotations

import os
import warnings
from abc import ABC
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from fewshot.data import cache as image_cache
from fewshot.utils.errors import UserError

SYNTHETIC_MARKER = "SYNTHETIC"
# What PIL reads and torchvision's ImageFolder lists (lower case; a file's suffix is compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class EmptyDatasetError(UserError):
    """No usable image: the catalogue lists none, or none of its rows has a (decodable) image."""


class Catalog(Dataset, ABC):
    """Images with a class each, one row per usable image; see the module docstring for the table.

    Attributes:
        root: what ``--data`` named (a folder, or the manifest file); the image cache is kept per root.
        base: the folder that ``table["path"]`` is relative to.
        layout: "kaggle", "imagefolder" or "manifest".
        table: one row per usable image, index 0..N-1.
        classes: sorted class names present in ``table``; ``labels[i]`` indexes into it (-1: no class).
        labels: int64 [N]; ``targets`` is the same list, as torchvision's ``ImageFolder`` has it.
        names: the text of every image (list of N str), "" where there is none: the text branch's input.
        n_rows: rows (or image files) the reader found, usable or not.
        bad_rows: malformed rows left out (``on_bad_rows="skip"``), as :class:`fewshot.data.styles.BadRow`.
        missing: rows whose image file does not exist (reported, excluded), with the table's columns.
        corrupt: images that could not be decoded, id -> reason (known once the cache is built).
        corrupt_rows: their rows of the table, left out (:meth:`without_corrupt`).
        images: uint8 [N, H, W, 3] when served from the cache, else None.
        synthetic: True when the data was written by ``fewshot synth`` (a ``SYNTHETIC`` marker file).
    """

    layout: ClassVar[str] = ""
    items: ClassVar[str] = "images"  # what a row is called in messages ("products" for the Kaggle catalogue)

    root: Path
    base: Path
    table: pd.DataFrame
    n_rows: int
    bad_rows: list
    missing: pd.DataFrame
    corrupt: dict[int, str]
    images: np.ndarray | None
    transform: Callable[[Any], Any] | None
    synthetic: bool

    def _start(self, root: Path, base: Path, transform: Callable[[Any], Any] | None) -> None:
        self.root, self.base, self.transform = Path(root), Path(base), transform
        self.corrupt = {}
        self.corrupt_rows = pd.DataFrame()
        self.images = None
        marker_dir = self.root if self.root.is_dir() else self.root.parent
        self.synthetic = (marker_dir / SYNTHETIC_MARKER).exists()

    def _finish(self, all_rows: pd.DataFrame, has_image: np.ndarray, *, warn: bool, what: str) -> None:
        """Keep the rows whose file exists; warn about (and keep in ``missing``) the others. ``what`` names the
        listing in messages ("row(s) of styles.csv")."""
        self.missing = all_rows[~has_image].reset_index(drop=True)
        if warn and len(self.missing):
            warnings.warn(f"{self.root}: {len(self.missing)} {what} have no image file and are excluded: "
                          f"{_class_counts(self.missing)}", stacklevel=3)
        if not has_image.any():
            raise EmptyDatasetError(self._why_empty(len(all_rows)))
        self._set_rows(all_rows[has_image].reset_index(drop=True))

    def _why_empty(self, n_rows: int) -> str:
        return f"{self.root}: no usable {self.items}"

    def _set_rows(self, table: pd.DataFrame) -> None:
        self.table = table
        self.ids = table["id"].to_numpy(np.int64)
        self.classes = sorted(table["label"].dropna().unique().tolist())
        codes = pd.Categorical(table["label"], categories=self.classes).codes
        self.labels = codes.astype(np.int64)
        self.targets = self.labels.tolist()
        self.names = table["name"].tolist()

    @property
    def row_labels(self) -> np.ndarray:
        """object [N]: the class name of every row (NA where there is none), what the protocols group by."""
        return self.table["label"].astype(object).to_numpy()

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def image_path(self, index: int) -> Path:
        return self.base / self.table["path"].iat[index]

    def _image_files(self) -> image_cache.ImageFiles | None:
        """The rows' files for the image cache (None: the Kaggle ``images/<id>.jpg`` convention)."""
        return image_cache.ImageFiles(self.base, tuple(self.table["path"].tolist()), self._key_bytes())

    def _key_bytes(self) -> bytes:
        """What the image cache key hashes besides the files' listing."""
        return self.layout.encode()

    def cached(
        self,
        size: tuple[int, int] = (80, 60),
        *,
        cache_root: str | os.PathLike | None = None,
        strict: bool = False,
        progress: bool = True,
        warn: bool = True,
    ) -> Catalog:
        """A copy served from the decoded-image cache at ``size`` (H, W), built on first use.

        Images that cannot be decoded are left out (listed in ``corrupt``, their rows in ``corrupt_rows``, with
        a warning unless ``warn`` is False: a caller that reports them itself), or raise
        :class:`fewshot.data.cache.CorruptImageError` when ``strict``. Class indices may shift if a class
        loses all its images; compare ``classes`` lists, not label numbers, across the two objects.
        """
        c = image_cache.load_or_build(self.root, self.ids, size=size, cache_root=cache_root, strict=strict,
                                      progress=progress, files=self._image_files())
        if not len(c.ids):
            raise EmptyDatasetError(f"{self.root}: no usable {self.items}: all {len(c.bad)} image(s) are corrupt "
                                    f"(e.g. {next(iter(c.bad.values()))})")
        out = self.without_corrupt(c.bad)
        if not np.array_equal(out.ids, c.ids):
            raise RuntimeError(f"{c.path}: cache ids are out of order with the catalogue; delete the folder")
        out.images = c.images
        out.cache = c
        if c.bad and warn:
            warnings.warn(f"{self.root}: {len(c.bad)} image(s) could not be decoded and are excluded: "
                          + "; ".join(f"id {k}: {v}" for k, v in list(c.bad.items())[:5]), stacklevel=2)
        return out

    def without_corrupt(self, bad: dict[int, str]) -> Catalog:
        """A copy without the rows whose image is corrupt (``bad``: id -> reason, as an image cache build found
        them; ids not in the table are ignored): its counts are those of the images the benchmark can use.
        ``corrupt`` holds ``bad``'s entries for these rows, ``corrupt_rows`` the rows left out."""
        keep = ~np.isin(self.ids, np.fromiter(bad, dtype=np.int64, count=len(bad)))
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out._set_rows(self.table[keep].reset_index(drop=True))
        out.corrupt_rows = self.table[~keep].reset_index(drop=True)
        out.corrupt = {int(i): bad[int(i)] for i in out.corrupt_rows["id"].tolist()}
        return out

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """(image, label). From the cache the image is a uint8 tensor [3, H, W]; else a PIL RGB image."""
        if self.images is not None:
            image: Any = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)
        else:
            with Image.open(self.image_path(index)) as im:
                image = im.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int]]:
        # DataLoader calls this with a whole batch; one fancy-index read of the memmap beats N small ones.
        if self.images is None or self.transform is not None:
            return [self[i] for i in indices]
        batch = torch.from_numpy(self.images[np.asarray(indices)]).permute(0, 3, 1, 2)
        return list(zip(batch, self.labels[indices].tolist()))

    def recorded_corrupt(self, cache_root: str | os.PathLike | None = None) -> image_cache.ImageCache | None:
        """The up-to-date image cache of these rows (any size) whose ``bad`` lists the corrupt images its
        build found; None when no such cache exists. Reads an index, decodes nothing."""
        if self.images is not None:
            return self.cache
        return image_cache.find_existing(self.root, self.ids, cache_root=cache_root, files=self._image_files())

    def describe(self) -> dict[str, Any]:
        """Counts for reports: rows, usable images, missing and corrupt ones, whether synthetic, the layout.

        ``n_corrupt_images`` is None unless served from the cache: only decoding finds a corrupt image, and a
        catalogue not served from the cache decodes nothing (a 0 there would claim a check that never ran).
        """
        return {
            "root": str(self.root), "synthetic": self.synthetic, "n_rows": self.n_rows,
            "n_images": len(self), "n_missing_images": len(self.missing),
            "n_bad_rows": len(self.bad_rows),
            "n_corrupt_images": len(self.corrupt) if self.images is not None else None,
            "n_classes": len(self.classes), "layout": self.layout,
            "n_with_text": int(sum(1 for n in self.names if n.strip())),
        }


def _class_counts(rows: pd.DataFrame, top: int = 5) -> str:
    counts = rows["label"].astype(object).fillna("<no class>").value_counts()
    shown = ", ".join(f"{k} {v}" for k, v in counts.head(top).items())
    return shown + (f" and {len(counts) - top} more classes" if len(counts) > top else "")


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
