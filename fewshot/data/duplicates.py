"""Pixel-identical images: find them in a decoded-image array and keep one of each.

A *group* is a set of two or more rows whose decoded pixels are identical byte for byte. Group arrays are
int64 [N]: the group id of each row (0..G-1, numbered in order of first occurrence) or -1 for a row without a
copy. The functions are pure; :mod:`fewshot.data.protocols` uses them to drop copies from its splits.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:  # only for the annotation: the data layer imports torch
    from fewshot.data.catalog import Catalog

DIGEST_BYTES = 16  # 128-bit blake2b; equal digests are also confirmed by comparing the pixels


def pixel_groups(images: np.ndarray, progress: bool = False, chunk: int = 4096) -> np.ndarray:
    """Group ids int64 [N] of ``images`` uint8 [N, H, W, 3] (memory-mapped is fine): rows with the same
    pixels share an id 0..G-1, numbered by first occurrence; -1 for a row that has no copy.

    Each row's bytes are hashed (blake2b, 128 bits), reading ``chunk`` rows at a time so that a memory-mapped
    array never sits in RAM whole. Every row of a group is then compared with the group's first row, so a
    hash collision (about 2**-128 per pair) raises instead of merging two different pictures.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    n = len(images)
    first: dict[bytes, int] = {}
    owner = np.empty(n, dtype=np.int64)  # row of the first image with the same digest
    for start in tqdm(range(0, n, chunk), desc="hashing images", unit="chunk", disable=not progress):
        block = np.ascontiguousarray(images[start:start + chunk])
        for j, row in enumerate(block):
            owner[start + j] = first.setdefault(hashlib.blake2b(row, digest_size=DIGEST_BYTES).digest(), start + j)
    size = np.bincount(owner, minlength=n)
    number = np.full(n, -1, dtype=np.int64)
    number[size >= 2] = np.arange(int((size >= 2).sum()))  # owners ascend, so ids follow first occurrence
    groups = number[owner]
    for row in np.flatnonzero((groups >= 0) & (owner != np.arange(n))):
        if not np.array_equal(images[row], images[owner[row]]):
            raise RuntimeError(f"blake2b collision between rows {owner[row]} and {row}; the pixels differ")
    return groups


def dataset_groups(ds: Catalog, progress: bool = False) -> np.ndarray:
    """:func:`pixel_groups` of a dataset served from the image cache (``ds.cached(size)``); int64 [len(ds)],
    aligned with ``ds.table`` rows, so it can be passed to the protocols' ``duplicate_groups``."""
    if getattr(ds, "images", None) is None:
        raise ValueError("the dataset is not served from the image cache; pass ds.cached(size), not ds")
    return pixel_groups(ds.images, progress=progress)


def align_groups(groups: np.ndarray, group_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Carry ``groups`` of the products ``group_ids`` (e.g. an image cache's rows) onto the products ``ids``
    (e.g. a table's rows, which may hold products the cache lacks); int64 [len(ids)].

    A product absent from ``group_ids`` gets -1, as does one whose copies are all absent from ``ids``; ids
    are renumbered by first occurrence in ``ids``.
    """
    groups, group_ids, ids = check_groups(groups, len(group_ids)), np.asarray(group_ids), np.asarray(ids)
    lookup = dict(zip(group_ids.tolist(), groups.tolist()))
    carried = np.fromiter((lookup.get(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))
    members = carried >= 0
    values, first, size = np.unique(carried[members], return_index=True, return_counts=True)
    number = np.full(len(values), -1, dtype=np.int64)
    kept = np.flatnonzero(size >= 2)
    number[kept[np.argsort(first[kept])]] = np.arange(len(kept))
    carried[members] = number[np.searchsorted(values, carried[members])]
    return carried


def keep_one_per_group(groups: np.ndarray) -> np.ndarray:
    """bool [N]: True for every row without a copy and for the first (lowest) row of each group."""
    groups = check_groups(groups)
    keep = groups < 0
    values, first = np.unique(groups, return_index=True)
    keep[first[values >= 0]] = True
    return keep


def copies_across(groups: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray) -> np.ndarray:
    """The rows of ``test_idx`` (int64, in their order) whose group has a row in ``train_idx``: test images
    whose pixel copy is in train."""
    groups = check_groups(groups)
    train_idx, test_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)
    in_train = groups[train_idx]
    test_groups = groups[test_idx]
    return test_idx[(test_groups >= 0) & np.isin(test_groups, in_train[in_train >= 0])]


def describe_duplicates(groups: np.ndarray, articles: np.ndarray) -> dict[str, int]:
    """Counts for reports, given ``articles`` [N] (the class of each row).

    ``groups``: groups of copies; ``files``: rows in a group; ``extra_copies``: rows that keeping one per group
    drops (files - groups); ``within_class_groups`` / ``cross_class_groups``: groups whose rows are all of one
    class / of two or more classes.
    """
    groups = check_groups(groups, len(articles))
    member = groups >= 0
    files, n_groups = int(member.sum()), int(groups.max(initial=-1)) + 1
    labels = np.unique(np.asarray(articles, dtype=object)[member].astype(str), return_inverse=True)[1]
    pairs = np.unique(np.stack([groups[member], labels.reshape(-1)]), axis=1)  # distinct (group, class)
    within = int((np.bincount(pairs[0], minlength=n_groups) == 1).sum())
    return {"groups": n_groups, "files": files, "extra_copies": files - n_groups,
            "within_class_groups": within, "cross_class_groups": n_groups - within}


def check_groups(groups: np.ndarray, n: int | None = None) -> np.ndarray:
    """``groups`` as int64 [N]; a ValueError when it is not 1-D integers or not of length ``n``."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or not (groups.dtype.kind in "iu" or groups.size == 0):
        raise ValueError(f"duplicate groups must be a 1-D integer array, got {groups.dtype} {list(groups.shape)}")
    if n is not None and len(groups) != n:
        raise ValueError(f"duplicate groups have {len(groups)} rows, but the table has {n}")
    return groups.astype(np.int64, copy=False)
