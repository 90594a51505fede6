"""A text-branch classifier: any feature-based method on text features, abstaining on empty names."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fewshot.methods.base import FewShotClassifier, fit_validated


class TextHead(FewShotClassifier):
    """Wraps ``head`` (a method fitted on text features [n, d], e.g. TF-IDF of product names) so that a
    query without text evidence, an all-zero feature row (an empty name, or one with no known n-gram),
    gets all-zero scores [C]: a uniform distribution after softmax, i.e. the branch abstains. Fitting
    uses every support row as it is (a train product without a name still counts for its class).
    """

    def __init__(self, head: FewShotClassifier) -> None:
        super().__init__()
        self.head = head

    @property
    def chosen(self) -> dict:
        return dict(getattr(self.head, "chosen", {}) or {})

    @property
    def uses_validation(self) -> bool:  # type: ignore[override]  (as the wrapped method does)
        return self.head.uses_validation

    def fit(self, support: Tensor, support_labels: Tensor, groups: np.ndarray | None = None) -> TextHead:
        """support: [n, d] text features; support_labels: [n] in 0..C-1; groups: for a wrapped method that
        chooses its settings on validation (see :class:`FewShotClassifier`)."""
        fit_validated(self.head, support, support_labels, groups)
        return self

    def scores(self, query: Tensor) -> Tensor:
        """query: [q, d] -> [q, C]; rows of abstaining queries are 0."""
        scores = self.head.scores(query)
        return torch.where(abstains(query).unsqueeze(1), torch.zeros_like(scores), scores)


def abstains(features: Tensor) -> Tensor:
    """bool [n]: rows that carry no text evidence (all zero)."""
    return ~(features != 0).any(dim=1)
