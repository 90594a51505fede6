"""Per-image predictions kept for later: each test image's top-k classes, from which every top-k figure can be
recomputed exactly (:func:`per_class_topk_from_top`), without the full score matrix.

The order within a row is the evaluator's own (:func:`fewshot.evaluation.target_ranks`): higher scores first,
ties toward the lower class index, NaN above every number. So ``top[:, 0] == target`` exactly when
``per_class_topk`` counts a top-1 hit, and ``target in top[:, :k]`` when it counts a top-k hit (k <= kept).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fewshot.evaluation.functional import check_ks
from fewshot.evaluation.result import TopKResult


def top_predictions(scores: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes int64 [n, min(k, C)], their scores [n, min(k, C)]) of scores [n, C], best first, in the
    evaluator's tie order."""
    if scores.ndim != 2 or not scores.dtype.is_floating_point or k < 1:
        raise ValueError(f"scores must be float [n, C] and k >= 1, got {tuple(scores.shape)} {scores.dtype}, k={k}")
    # NaN first, as target_ranks ranks it; a stable descending sort keeps the lower index first among ties
    key = torch.where(torch.isnan(scores), torch.full_like(scores, float("inf")), scores)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, : min(k, scores.shape[1])]
    return order, scores.gather(1, order)


def topk_hits_from_top(top: np.ndarray, targets: np.ndarray, ks: Sequence[int] = (1, 5)) -> np.ndarray:
    """bool [n, len(ks)]: whether each target is among the first k classes of its row of ``top`` [n, K]
    (each k at most K, the number of classes kept)."""
    ks = check_ks(ks)
    top, targets = np.asarray(top), np.asarray(targets)
    if top.ndim != 2 or targets.shape != top.shape[:1]:
        raise ValueError(f"top must be [n, K] and targets [n], got {top.shape} and {targets.shape}")
    if max(ks) > top.shape[1]:
        raise ValueError(f"top-{max(ks)} needs {max(ks)} kept classes per row, the predictions keep {top.shape[1]}")
    match = top == targets[:, None]
    return np.stack([match[:, :k].any(axis=1) for k in ks], axis=1)


def per_class_topk_from_top(top: np.ndarray, targets: np.ndarray, n_classes: int, ks: Sequence[int] = (1, 5),
                            class_names: Sequence[str] | None = None) -> TopKResult:
    """The :class:`TopKResult` that ``per_class_topk`` gave on the full scores, from the kept top classes
    [n, K] (K >= min(max(ks), n_classes)) and the targets [n]."""
    ks = check_ks(ks)
    used = [min(k, n_classes) for k in ks]
    hits = topk_hits_from_top(top, targets, tuple(dict.fromkeys(used)))
    column = {k: i for i, k in enumerate(dict.fromkeys(used))}
    targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    counts = torch.bincount(targets, minlength=n_classes)
    hit_counts = torch.stack([torch.bincount(targets[torch.from_numpy(hits[:, column[k]])], minlength=n_classes)
                              for k in used])
    return TopKResult.from_counts(counts, hit_counts, ks, class_names)



def prediction_record(scores: torch.Tensor, k: int = 5) -> dict[str, np.ndarray]:
    """What a run keeps of scores [n, C]: {"top": int16 [n, min(k, C)] classes best first (the evaluator's
    order), "scores": float16 [n, min(k, C)] their scores, for reading, not ranking}."""
    top, values = top_predictions(scores.detach().float().cpu(), k)
    return {"top": top.numpy().astype(np.int16), "scores": values.numpy().astype(np.float16)}
