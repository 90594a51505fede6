"""Class-stratified bootstrap of macro / micro accuracy over the test images, paired across methods.

Every method is scored on the same test images, so one set of resamples serves all of them: a difference
between two methods is read off the same resampled images (a paired interval), which is far narrower than
two unpaired intervals. Within each class the class's test images are drawn with replacement, as many as it
has (the stratified bootstrap of Efron & Tibshirani 1993, "An Introduction to the Bootstrap", and Davison &
Hinkley 1997, section 3.2), so class counts, and with them the macro average's weights, never change.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from fewshot.evaluation.functional import check_ks, check_scores, target_ranks

try:  # optional (scikit-learn brings it): only the speed depends on it, never the numbers
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

CHUNK = 256  # resamples per draw: bounds memory at CHUNK * (largest class) and fixes the random stream
RESERVED = ("macro", "micro")


def topk_hits(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> np.ndarray:
    """Per-image top-k hits: bool [n, len(ks)] from scores [n, C] and targets [n], with the tie rule of
    :func:`fewshot.evaluation.target_ranks`, so the bootstrap's point figures equal ``per_class_topk``'s."""
    ks = check_ks(ks)
    targets = torch.as_tensor(targets, device=scores.device)
    check_scores(scores, targets)
    ranks = target_ranks(scores, targets).cpu().numpy()
    return np.stack([ranks < min(k, scores.shape[1]) for k in ks], axis=1)


def _check(hits: np.ndarray, targets: np.ndarray, n_classes: int, n_resamples: int) -> None:
    if hits.ndim != 2:
        raise ValueError(f"hits must be [n_images, n_columns], got shape {hits.shape}")
    if targets.ndim != 1 or len(targets) != len(hits):
        raise ValueError(f"targets must be [{len(hits)}] to match hits, got shape {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if n_classes < 1 or (len(targets) and (targets.min() < 0 or targets.max() >= n_classes)):
        raise ValueError(f"targets must lie in 0..{n_classes - 1} (n_classes={n_classes})")
    if not np.isin(hits, (0, 1)).all():
        raise ValueError("hits must be 0/1 (bool): one entry per image and column, 1 = a hit")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an int >= 1, got {n_resamples!r}")


def _class_draws(targets: np.ndarray, n_classes: int, n_resamples: int,
                 seed: int) -> Iterator[tuple[int, np.ndarray, int, np.ndarray]]:
    """Yield (class, member positions [n_c], first resample, draws [chunk, n_c]) in class order, where
    ``draws[r, j]`` is which member (0..n_c-1) resample ``first + r`` puts in the member ``j``'s place.

    Each class, and each chunk of ``CHUNK`` resamples within it, has its own child of ``SeedSequence(seed)``,
    so the draws depend on the seed, the class sizes and the chunk, never on the order of computation.
    """
    children = np.random.SeedSequence(seed).spawn(n_classes)
    for c in range(n_classes):
        members = np.flatnonzero(targets == c)
        if members.size == 0:
            continue
        chunks = children[c].spawn((n_resamples + CHUNK - 1) // CHUNK)
        for i, child in enumerate(chunks):
            size = min(CHUNK, n_resamples - i * CHUNK)
            yield c, members, i * CHUNK, np.random.default_rng(child).integers(members.size, size=(size, members.size))


def resample_indices(targets: np.ndarray, n_classes: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """The resampled images themselves: int64 [R, N], row r holding, in each image's place, the image
    (of the same class) that resample r draws there. The same draws as :func:`bootstrap_accuracy` with the
    same seed; R * N * 8 bytes, so meant for checks and small cases, not the benchmark's sizes."""
    targets = np.asarray(targets)
    _check(np.zeros((len(targets), 0), dtype=bool), targets, n_classes, n_resamples)
    out = np.empty((n_resamples, len(targets)), dtype=np.int64)
    for _, members, first, draws in _class_draws(targets, n_classes, n_resamples, seed):
        out[first:first + len(draws), members] = members[draws]
    return out


@dataclass(frozen=True)
class BootstrapDraws:
    """Point figures and bootstrap draws, one column per column of ``hits``.

    point: ``{"macro": [M], "micro": [M], <subset>: [M]}`` the plain figures on the test images.
    draws: the same keys, [R, M] each: the figure on each resample (NaN where no class has items).
    class_counts: [C] test images per class (the same in every resample).
    """

    point: dict[str, np.ndarray]
    draws: dict[str, np.ndarray]
    class_counts: np.ndarray
    n_resamples: int
    seed: int

    def interval(self, figure: str = "macro", level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval (low [M], high [M]) of one figure."""
        return percentile_interval(self.draws[figure], level)

    def difference(self, a: int, b: int, figure: str = "macro") -> np.ndarray:
        """Paired draws [R] of column a minus column b (the same resampled images for both)."""
        return self.draws[figure][:, a] - self.draws[figure][:, b]


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles of draws [R, ...] over axis 0 (the percentile
    interval, Efron & Tibshirani 1993 ch. 13); NaN where a draw is NaN."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    low, high = np.percentile(np.asarray(draws, dtype=np.float64), [50 * (1 - level), 50 * (1 + level)], axis=0)
    return low, high


def _subset_masks(class_subsets: Mapping[str, np.ndarray] | None, n_classes: int) -> dict[str, np.ndarray]:
    masks = {}
    for name, subset in (class_subsets or {}).items():
        if name in RESERVED:
            raise ValueError(f"class subset name {name!r} is reserved; pick another than {RESERVED}")
        subset = np.asarray(subset)
        if subset.dtype == bool:
            if subset.shape != (n_classes,):
                raise ValueError(f"boolean class subset {name!r} must be [{n_classes}], got shape {subset.shape}")
            masks[name] = subset
        elif subset.ndim == 1 and (subset.size == 0 or np.issubdtype(subset.dtype, np.integer)):
            if subset.size and (subset.min() < 0 or subset.max() >= n_classes):
                raise ValueError(f"class subset {name!r} holds classes outside 0..{n_classes - 1}")
            masks[name] = np.isin(np.arange(n_classes), subset)
        else:
            raise ValueError(f"class subset {name!r} must be class indices or a [{n_classes}] boolean mask")
    return masks


def _plain_macro(accuracy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the classes of ``mask`` of accuracy [C, M], column by column as a contiguous 1-D mean (the
    summation TopKResult and bucket_means use, so the figures agree to the bit); NaN for an empty mask."""
    return np.array([accuracy[mask, m].mean() if mask.any() else np.nan for m in range(accuracy.shape[1])])


def _class_weights(mask: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weights [C] turning per-class hit counts into the macro mean over ``mask``: 1 / (n_c * |mask|)."""
    n_sel = int(mask.sum())
    if n_sel == 0:
        return np.full(len(counts), np.nan)  # an empty subset has no macro figure: NaN draws
    return np.where(mask, 1.0 / (np.maximum(counts, 1) * n_sel), 0.0)


def bootstrap_accuracy(hits: np.ndarray, targets: np.ndarray, n_classes: int, *, n_resamples: int = 1000,
                       seed: int = 0, class_subsets: Mapping[str, np.ndarray] | None = None) -> BootstrapDraws:
    """Class-stratified bootstrap of macro, micro and per-subset macro accuracy of every column of ``hits``.

    Args:
        hits: [N, M] 0/1, image n is a hit for column m (one column per method x metric, e.g. from
            :func:`topk_hits`). targets: [N] class of each image, 0..n_classes-1.
        class_subsets: named class sets (index arrays or [C] masks), e.g. the Many/Medium/Few buckets;
            each gives a macro average over its classes that have test images.
    A resample is its counts per image (a multinomial per class); the per-class hits of all columns are
    then ``counts_c [R, n_c] @ hits_c [n_c, M]``, one matrix product per class and chunk of resamples.
    Classes without test images stay out of every macro average. Float32 products are exact here: every
    partial sum is an integer at most n_c < 2**24.
    """
    hits, targets = np.asarray(hits), np.asarray(targets)
    _check(hits, targets, n_classes, n_resamples)
    masks = _subset_masks(class_subsets, n_classes)
    counts = np.bincount(targets, minlength=n_classes)
    present = counts > 0
    hits32 = hits.astype(np.float32)
    # [R, M, C]: the class axis last, so each macro figure below is one matrix-vector product over it.
    per_class = np.zeros((n_resamples, hits.shape[1], n_classes))  # resampled hit counts
    # One BLAS thread: the products are small, and on a shared machine a second thread mostly waits for a
    # core (measured 2-10x slower with 2 threads on a busy 2-core box, never faster on an idle one).
    with threadpool_limits(1, user_api="blas") if threadpool_limits else nullcontext():
        for c, members, first, draws in _class_draws(targets, n_classes, n_resamples, seed):
            n_c, size = members.size, len(draws)
            offsets = (np.arange(size) * n_c)[:, None]
            weights = np.bincount((draws + offsets).ravel(), minlength=size * n_c).reshape(size, n_c)
            per_class[first:first + size, :, c] = weights.astype(np.float32) @ hits32[members]
    # The plain figures as TopKResult computes them (int / int, then a float64 mean), so they agree exactly.
    plain = np.zeros((n_classes, hits.shape[1]))  # hit counts per class: float64 sums of 0/1, exact
    np.add.at(plain, targets, hits.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = plain / counts[:, None]
    n_items = len(targets) if len(targets) else np.nan  # no images: NaN micro, not a division error
    point = {"macro": _plain_macro(accuracy, present), "micro": plain.sum(axis=0) / n_items}
    draws = {"macro": per_class @ _class_weights(present, counts), "micro": per_class.sum(axis=2) / n_items}
    for name, mask in masks.items():
        point[name] = _plain_macro(accuracy, mask & present)
        draws[name] = per_class @ _class_weights(mask & present, counts)
    return BootstrapDraws(point=point, draws=draws, class_counts=counts, n_resamples=n_resamples, seed=int(seed))
