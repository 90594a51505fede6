"""torchvision's ``ImageFolder`` layout as a :class:`~fewshot.data.catalog.Catalog`.

``DIR/<class>/<image>``: one folder per class, its images in it or in folders below it (any format PIL reads,
by file suffix: :data:`~fewshot.data.catalog.IMAGE_EXTENSIONS`). With ``DIR/train/<class>/...`` and
``DIR/test/<class>/...`` the split is the folders' (the table's ``split`` column); without, the protocols draw
a seeded stratified split (:mod:`fewshot.data.rules`). Files of other suffixes and hidden files are skipped
(counted); a class folder without a single image is reported and left out. Nothing is decoded to list the
images. Images have no text: every ``name`` is "".
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fewshot.data.catalog import IMAGE_EXTENSIONS, Catalog, EmptyDatasetError, is_image_file
from fewshot.utils.errors import UserError

SPLIT_FOLDERS = ("train", "test")


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


class ImageFolderCatalog(Catalog):
    """Attributes (besides :class:`~fewshot.data.catalog.Catalog`'s):
        has_split: the folder holds train/ and test/ (the table then has a ``split`` column).
        empty_classes: class folders without a single image (left out, reported).
        skipped_files: files that are not images by their suffix (left out, counted).
    """

    layout = "imagefolder"

    def __init__(self, root: str | os.PathLike, *, transform: Callable[[Any], Any] | None = None,
                 warn: bool = True) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder; point --data at an image folder (one subfolder per class)")
        self._start(root, root, transform)
        top = _subdirs(root)
        self.has_split = all(s in top for s in SPLIT_FOLDERS)
        if self.has_split:
            others = [d for d in top if d not in SPLIT_FOLDERS]
            if others:
                raise UserError(f"{root}: holds train/ and test/ and also {', '.join(d + '/' for d in others)}; an "
                                "image folder with a split holds only train/<class>/ and test/<class>/ (move the "
                                "other folders out, or list the images in a CSV manifest with a split column)")
            parts = [(s, root / s) for s in SPLIT_FOLDERS]
        else:
            parts = [("", root)]
        rows: list[tuple[str, str, str]] = []  # (split, class, path relative to root)
        per_class: dict[str, int] = {}
        self.skipped_files: list[str] = []
        missing: list[tuple[str, str, str]] = []
        for split, folder in parts:
            loose = [e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name)]
            if loose:
                where = f"{folder.relative_to(root)}/" if split else ""
                raise UserError(f"{folder}: {len(loose)} image(s) lie directly in {where or 'the folder'} (e.g. "
                                f"{loose[0]}); an image folder holds one subfolder per class, named after the "
                                "class, with the images inside")
            for cls in _subdirs(folder):
                per_class.setdefault(cls, 0)
                for rel in self._files(folder / cls, root):
                    target = root / rel
                    if target.is_file():
                        rows.append((split, cls, rel))
                        per_class[cls] += 1
                    else:  # a dangling link: listed, but no file
                        missing.append((split, cls, rel))
        self.empty_classes = sorted(c for c, n in per_class.items() if n == 0)
        self.n_rows = len(rows) + len(missing)
        self.bad_rows = []
        if warn and self.empty_classes:
            warnings.warn(f"{root}: {len(self.empty_classes)} class folder(s) hold no image and are left out: "
                          + ", ".join(self.empty_classes[:10]), stacklevel=2)
        if warn and self.skipped_files:
            warnings.warn(f"{root}: {len(self.skipped_files)} file(s) are not images by their suffix and are "
                          f"skipped (e.g. {self.skipped_files[0]})", stacklevel=2)
        everything = rows + missing
        table = pd.DataFrame({
            "id": np.arange(len(everything), dtype=np.int64),
            "path": [r[2] for r in everything],
            "label": pd.array([r[1] for r in everything], dtype="string"),
            "name": [""] * len(everything),
            # the folder below the class folder ("." for none): a possible split key (data.split_key = "folder")
        "folder": [str(Path(r[2]).parent.relative_to(Path(r[0]) / r[1] if r[0] else Path(r[1])))
                       for r in everything],
        })
        if self.has_split:
            table["split"] = pd.array([r[0] for r in everything], dtype="string")
        has_image = np.arange(len(everything)) < len(rows)
        if not len(everything):
            raise EmptyDatasetError(f"{root}: no images: {len(per_class)} class folder(s), none holding an image "
                                    f"file (by suffix: {', '.join(IMAGE_EXTENSIONS)})")
        self._finish(table, has_image, warn=warn, what="listed file(s)")

    def _files(self, folder: Path, root: Path) -> list[str]:
        """Image files under ``folder`` (recursively, sorted, hidden entries skipped), relative to ``root``."""
        found: list[str] = []
        seen: set[str] = set()  # real paths walked: a linked folder is followed once, a link cycle ends
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if is_image_file(name):
                    found.append(rel)
                elif not name.startswith("."):
                    self.skipped_files.append(rel)
        return found

    def _key_bytes(self) -> bytes:
        return json.dumps({"layout": self.layout, "split": self.has_split}).encode()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "has_split": self.has_split, "empty_classes": list(self.empty_classes),
                "n_skipped_files": len(self.skipped_files)}
