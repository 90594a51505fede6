"""Stateful metric objects: accumulate over batches, then ``compute()`` the same result as the pure function."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from fewshot.evaluation.functional import check_ks, check_scores, topk_counts
from fewshot.evaluation.result import TopKResult


class Metric(ABC):
    """``update`` with each batch, ``compute`` the result, ``reset`` to start over (torchmetrics style)."""

    @abstractmethod
    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None: ...

    @abstractmethod
    def compute(self) -> Any: ...

    @abstractmethod
    def reset(self) -> None: ...


class TopKAccuracy(Metric):
    """Per-class top-k accuracy accumulated over batches of scores [n, C] and targets [n].

    Holds only integer per-class counts (on the device of the latest scores), so the result equals
    :func:`fewshot.evaluation.per_class_topk` on the concatenated batches exactly.
    """

    def __init__(self, num_classes: int, ks: Sequence[int] = (1, 5), class_names: Sequence[str] | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class_names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.ks = check_ks(ks)
        self.class_names = None if class_names is None else list(class_names)
        self.reset()

    def reset(self) -> None:
        device = getattr(self, "counts", torch.empty(0)).device
        self.counts = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        self.hits = torch.zeros(len(self.ks), self.num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: scores [n, C] (higher = more likely), targets [n] class indices."""
        targets = torch.as_tensor(targets, device=scores.device)
        check_scores(scores, targets, self.num_classes)
        if self.counts.device != scores.device:
            self.counts, self.hits = self.counts.to(scores.device), self.hits.to(scores.device)
        counts, hits = topk_counts(scores, targets, self.ks)
        self.counts += counts
        self.hits += hits

    def compute(self) -> TopKResult:
        return TopKResult.from_counts(self.counts, self.hits, self.ks, self.class_names)

    @property
    def n_items(self) -> int:
        return int(self.counts.sum())
