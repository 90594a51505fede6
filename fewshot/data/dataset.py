"""The Kaggle *Fashion Product Images* layout as a PyTorch dataset.

``FashionProducts(root)`` lists the products of ``root/styles.csv`` whose ``root/images/<id>.jpg``
exists; it decodes nothing, so ``labels`` (and its torchvision alias ``targets``) cost no image I/O.
``.cached(size)`` returns the same products served from the decoded-image cache (:mod:`fewshot.data.cache`),
without those whose JPEG turns out to be corrupt.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from fewshot.data import cache as image_cache
from fewshot.data.styles import DatasetLayoutError, read_styles
from fewshot.utils.errors import UserError

SYNTHETIC_MARKER = "SYNTHETIC"


class EmptyDatasetError(UserError):
    """No usable product: styles.csv has no data row, or none of its rows has a (decodable) image."""


class FashionProducts(Dataset):
    """Products that have an image, labelled by ``articleType``.

    Attributes:
        root: the dataset folder (``styles.csv`` + ``images/``).
        styles: one row per usable product (columns of :data:`fewshot.data.styles.COLUMNS`), index 0..N-1.
        classes: sorted article types present in ``styles``; ``labels[i]`` indexes into it.
        labels: int64 [N]; ``targets`` is the same list, as torchvision's ``ImageFolder`` has it.
        names: the ``productDisplayName`` of every product (list of N str), "" where it is empty or missing:
            the text branch's input, read without decoding an image.
        missing: rows of styles.csv whose image file does not exist (reported, excluded).
        corrupt: products whose JPEG could not be decoded, id -> reason (known once the cache is built;
            empty before: see :meth:`recorded_corrupt` for what an earlier build found).
        images: uint8 [N, H, W, 3] when served from the cache, else None.
        synthetic: True when ``root`` was written by ``fewshot synth``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        on_bad_rows: Literal["raise", "skip"] = "raise",
        transform: Callable[[Any], Any] | None = None,
        warn: bool = True,
    ) -> None:
        self.root = Path(root)
        if not (self.root / "images").is_dir():
            raise DatasetLayoutError(
                f"{self.root}: no images/ folder. Point --data (or FEWSHOT_DATA) at a folder holding "
                "styles.csv and images/<id>.jpg, or make a synthetic one with `fewshot synth --out DIR`."
            )
        all_rows = read_styles(self.root / "styles.csv", on_bad_rows=on_bad_rows)
        present = {e.name for e in os.scandir(self.root / "images")}
        has_image = np.fromiter((f"{i}.jpg" in present for i in all_rows["id"]), bool, len(all_rows))
        self.n_rows = len(all_rows)
        self.bad_rows = all_rows.attrs.get("bad_rows", [])
        self.missing = all_rows[~has_image].reset_index(drop=True)
        if warn and len(self.missing):
            warnings.warn(f"{self.root}: {len(self.missing)} row(s) of styles.csv have no image file and are "
                          f"excluded: {_class_counts(self.missing)}", stacklevel=2)
        self.corrupt: dict[int, str] = {}
        self.images: np.ndarray | None = None
        self.transform = transform
        self.synthetic = (self.root / SYNTHETIC_MARKER).exists()
        if not has_image.any():
            raise EmptyDatasetError(self._why_empty(len(all_rows)))
        self._set_rows(all_rows[has_image].reset_index(drop=True))

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

    def _set_rows(self, styles: pd.DataFrame) -> None:
        self.styles = styles
        self.ids = styles["id"].to_numpy(np.int64)
        self.classes = sorted(styles["articleType"].dropna().unique().tolist())
        codes = pd.Categorical(styles["articleType"], categories=self.classes).codes
        self.labels = codes.astype(np.int64)
        self.targets = self.labels.tolist()
        self.names = styles["productDisplayName"].fillna("").astype(str).tolist()

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def cached(
        self,
        size: tuple[int, int] = (80, 60),
        *,
        cache_root: str | os.PathLike | None = None,
        strict: bool = False,
        progress: bool = True,
    ) -> FashionProducts:
        """A copy served from the decoded-image cache at ``size`` (H, W), built on first use.

        Products whose JPEG is corrupt are left out (listed in ``corrupt`` with a warning), or raise
        :class:`fewshot.data.cache.CorruptImageError` when ``strict``. Class indices may shift if a class
        loses all its images; compare ``classes`` lists, not label numbers, across the two objects.
        """
        c = image_cache.load_or_build(self.root, self.ids, size=size, cache_root=cache_root,
                                      strict=strict, progress=progress)
        keep = np.isin(self.ids, c.ids)
        out = object.__new__(FashionProducts)
        out.__dict__.update(self.__dict__)
        out._set_rows(self.styles[keep].reset_index(drop=True))
        if not np.array_equal(out.ids, c.ids):
            raise RuntimeError(f"{c.path}: cache ids are out of order with styles.csv; delete the folder")
        out.corrupt = dict(c.bad)
        out.images = c.images
        out.cache = c
        if not len(c.ids):
            raise EmptyDatasetError(f"{self.root}: no usable products: all {len(c.bad)} image(s) are corrupt "
                                    f"(e.g. {next(iter(c.bad.values()))})")
        if c.bad:
            warnings.warn(f"{self.root}: {len(c.bad)} image(s) could not be decoded and are excluded: "
                          + "; ".join(f"id {k}: {v}" for k, v in list(c.bad.items())[:5]), stacklevel=2)
        return out

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """(image, label). From the cache the image is a uint8 tensor [3, H, W]; else a PIL RGB image."""
        if self.images is not None:
            image: Any = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)
        else:
            with Image.open(self.root / "images" / f"{self.ids[index]}.jpg") as im:
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
        """The up-to-date image cache of these products (any size) whose ``bad`` lists the corrupt images
        its build found; None when no such cache exists. Reads an index, decodes nothing."""
        if self.images is not None:
            return self.cache
        return image_cache.find_existing(self.root, self.ids, cache_root=cache_root)

    def describe(self) -> dict[str, Any]:
        """Counts for reports: rows, usable images, missing and corrupt ones, whether synthetic.

        ``n_corrupt_images`` is None unless served from the cache: only decoding finds a corrupt JPEG,
        and a plain ``FashionProducts`` decodes nothing (a 0 there would claim a check that never ran).
        """
        return {
            "root": str(self.root), "synthetic": self.synthetic, "n_rows": self.n_rows,
            "n_images": len(self), "n_missing_images": len(self.missing),
            "n_bad_rows": len(self.bad_rows),
            "n_corrupt_images": len(self.corrupt) if self.images is not None else None,
            "n_classes": len(self.classes),
        }


def _class_counts(rows: pd.DataFrame, top: int = 5) -> str:
    counts = rows["articleType"].fillna("<no articleType>").value_counts()
    shown = ", ".join(f"{k} {v}" for k, v in counts.head(top).items())
    return shown + (f" and {len(counts) - top} more classes" if len(counts) > top else "")
