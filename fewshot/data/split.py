"""A stratified, seeded validation split carved from the training images (never from the test images);
the group rule that holds out whole groups instead is :mod:`fewshot.data.validation`."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: Sequence[int] | np.ndarray, fraction: float, seed: int, *,
                     indices: Sequence[int] | np.ndarray | None = None,
                     min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Split into (train, val), sorted int64 arrays, stratified by class.

    Without ``indices`` the split is over positions 0..len(labels)-1 of ``labels``; with ``indices`` it
    is over those dataset indices (their labels are ``labels[indices]``) and returns dataset indices.
    Each class with n >= 2 items gives round(fraction * n) of them to val, at least ``min_per_class``
    and at most n - 1 (a class always keeps a training image); a class with a single item stays in
    train. The draw is a pure function of ``seed`` (NumPy's PCG64), class by class in label order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction={fraction} must lie in [0, 1)")
    labels = np.asarray(labels, dtype=np.int64)
    pool = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    pool_labels = labels[pool]
    if fraction == 0.0 or pool.size == 0:
        return np.sort(pool), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(pool_labels):
        members = pool[pool_labels == c]
        n = members.size
        if n < 2:
            continue
        n_val = min(n - 1, max(min_per_class, int(np.floor(fraction * n + 0.5))))
        val.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    train_idx = np.setdiff1d(pool, val_idx)
    return train_idx, val_idx
