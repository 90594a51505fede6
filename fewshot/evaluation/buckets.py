"""Many / Medium / Few buckets by number of train images per class (the ImageNet-LT convention of
Liu et al. 2019, "Large-Scale Long-Tailed Recognition in an Open World")."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BUCKETS = ("many", "medium", "few")
MANY_ABOVE = 100  # many: > 100 train images
FEW_BELOW = 20  # few: < 20; medium: 20..100 inclusive


def assign_buckets(n_train: Sequence[int] | np.ndarray) -> np.ndarray:
    """Bucket name of each class from its number of train images: [C] array of str."""
    n = np.asarray(n_train)
    if n.ndim != 1 or not np.issubdtype(n.dtype, np.integer) or (n < 0).any():
        raise ValueError(f"n_train must be a 1-D array of non-negative ints, got {n.dtype} of shape {n.shape}")
    return np.where(n > MANY_ABOVE, "many", np.where(n < FEW_BELOW, "few", "medium"))


def bucket_means(accuracy: Sequence[float] | np.ndarray, n_train: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Mean accuracy of the classes of each bucket; classes with NaN accuracy (no test items) are left out,
    and an empty bucket is NaN. Returns ``{"many": .., "medium": .., "few": ..}``."""
    acc = np.asarray(accuracy, dtype=np.float64)
    buckets = assign_buckets(n_train)
    if acc.shape != buckets.shape:
        raise ValueError(f"got {acc.shape[0]} accuracies but {buckets.shape[0]} n_train values; give one per class")
    out = {}
    for name in BUCKETS:
        sel = (buckets == name) & ~np.isnan(acc)
        out[name] = float(acc[sel].mean()) if sel.any() else float("nan")
    return out
