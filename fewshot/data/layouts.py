"""Which reader a path needs: the Kaggle folder, an image folder or a CSV manifest (:mod:`fewshot.data.catalog`).

:func:`data_dir` resolves ``--data`` / ``$FEWSHOT_DATA`` with a clear error, :func:`detect_layout` names the
layout and :func:`open_dataset` reads it. Kept apart from :mod:`fewshot.data.catalog`, the interface the
readers implement, so that the readers import the interface and this module imports the readers: no circle.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from fewshot.data.catalog import Catalog, is_image_file
from fewshot.data.dataset import FashionProducts
from fewshot.data.imagefolder import ImageFolderCatalog
from fewshot.data.manifest import ManifestCatalog
from fewshot.utils.errors import UserError

LAYOUTS = ("kaggle", "imagefolder", "manifest")
LAYOUTS_HINT = ("the folder that holds styles.csv and images/, an image folder (one subfolder of images per "
                "class), or a CSV manifest (columns path,label)")


def data_dir(value: str | None, *, any_layout: bool = False) -> Path:
    """``--data`` or ``$FEWSHOT_DATA``; a :class:`UserError` naming what to pass when neither names a Kaggle
    folder (with ``any_layout``: a Kaggle folder, an image folder or a CSV manifest, :func:`detect_layout`)."""
    value = value or os.environ.get("FEWSHOT_DATA")
    if not value:
        raise UserError("no dataset given; pass --data DIR or set FEWSHOT_DATA (download the Kaggle "
                        "'Fashion Product Images (Small)' dataset, or run `fewshot synth --out DIR`)")
    path = Path(value)
    where = LAYOUTS_HINT if any_layout else "the folder that holds styles.csv and images/"
    if any_layout and path.suffix.lower() == ".csv":
        if not path.is_file():
            raise UserError(f"{path}: no such manifest file; point --data (or FEWSHOT_DATA) at {where}")
        return path
    if not path.is_dir():
        if any_layout and path.is_file():
            raise UserError(f"{path} is a file, not a folder or a .csv manifest; point --data (or FEWSHOT_DATA) "
                            f"at {where}")
        raise UserError(f"{path}: no such folder; point --data (or FEWSHOT_DATA) at {where}")
    if not (path / "styles.csv").is_file():
        if any_layout and detect_layout(path) == "imagefolder":
            return path
        raise UserError(f"{path} has no styles.csv; point --data (or FEWSHOT_DATA) at {where}")
    return path


def detect_layout(path: str | os.PathLike) -> str | None:
    """"kaggle" (a folder with styles.csv), "manifest" (a .csv file), "imagefolder" (a folder of class
    folders, or of train/ and test/), or None when ``path`` is none of them."""
    path = Path(path)
    if path.is_file():
        return "manifest" if path.suffix.lower() == ".csv" else None
    if not path.is_dir():
        return None
    if (path / "styles.csv").is_file():
        return "kaggle"
    subdirs = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not subdirs:
        return None
    if subdirs == ["images"] and any(is_image_file(e.name) for e in os.scandir(path / "images") if e.is_file()):
        return None  # a Kaggle folder without its styles.csv, not one class called "images"
    return "imagefolder"


def open_dataset(path: str | os.PathLike, *, on_bad_rows: str = "raise", warn: bool = True,
                 transform: Callable[[Any], Any] | None = None, layout: str | None = None) -> Catalog:
    """The catalogue at ``path``, read by the reader of its layout (:func:`detect_layout`, or ``layout``)."""
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout == "kaggle":
        return FashionProducts(path, on_bad_rows=on_bad_rows, warn=warn, transform=transform)  # type: ignore[arg-type]
    if layout == "imagefolder":
        return ImageFolderCatalog(path, warn=warn, transform=transform)
    if layout == "manifest":
        return ManifestCatalog(path, on_bad_rows=on_bad_rows, warn=warn, transform=transform)  # type: ignore[arg-type]
    if layout is not None:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    raise UserError(f"{path}: not a dataset: expected a folder holding styles.csv and images/ (the Kaggle layout), "
                    "an image folder with one subfolder of images per class (or train/ and test/ holding them), "
                    "or a CSV manifest with columns path,label")
