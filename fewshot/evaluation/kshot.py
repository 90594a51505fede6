"""Accuracy against shots: a few-shot classifier fitted on K train items per class, over seeded draws."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fewshot.evaluation.functional import per_class_topk
from fewshot.methods.base import FewShotClassifier


def kshot_curve(make_classifier: Callable[[], FewShotClassifier], train_feats: torch.Tensor,
                train_labels: np.ndarray, test_feats: torch.Tensor, test_labels: torch.Tensor, *,
                ks: Sequence[int], draws: int, seed: int, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Macro/micro top-1 on the test items with a fresh ``make_classifier()`` fitted on K train items per
    class (capped at what a class has), averaged over ``draws`` seeded draws:
    {"1": {"macro_top1", "macro_top1_std", "micro_top1", "micro_top1_std", "draws"}, ...}.

    train_feats: [n, d] with train_labels: int [n] in 0..C-1 (C = len(class_names), every class present);
    test_feats: [q, d] with test_labels: [q]. Draw ``draw`` of K uses ``numpy.random.default_rng([seed, K,
    draw])``: a K's draws do not depend on which other Ks are studied.
    """
    members = [np.flatnonzero(train_labels == c) for c in range(len(class_names))]
    if any(len(m) == 0 for m in members):
        raise ValueError("kshot_curve needs train items of every class")
    out: dict[str, dict[str, float]] = {}
    for k in ks:
        macro, micro = [], []
        for draw in range(draws):
            rng = np.random.default_rng([seed, k, draw])
            pick = np.sort(np.concatenate([rng.choice(m, min(k, len(m)), replace=False) for m in members]))
            clf = make_classifier().fit(train_feats[pick], torch.from_numpy(train_labels[pick]))
            result = per_class_topk(clf.scores(test_feats), test_labels, ks=(1,), class_names=class_names)
            macro.append(result.macro["top1"])
            micro.append(result.micro["top1"])
        out[str(k)] = {"macro_top1": float(np.mean(macro)), "macro_top1_std": float(np.std(macro)),
                       "micro_top1": float(np.mean(micro)), "micro_top1_std": float(np.std(micro)), "draws": draws}
    return out
