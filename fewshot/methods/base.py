"""The one interface every few-shot method implements: fit on a support set, then score queries."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn


class FewShotClassifier(nn.Module, ABC):
    """Base class of the few-shot methods (two-step API as in easyfsl's ``FewShotClassifier``).

    ``fit(support, support_labels)`` stores what the method needs to classify (prototypes, a head...);
    ``scores(query)`` returns [n_query, n_classes], higher = more likely. Fitting twice on the same input
    gives the same state; ``forward`` is ``scores`` and changes nothing.

    Inputs are either cached features [n, d] (float) or images [n, 3, H, W] that go through ``backbone``
    (uint8 images are first converted by ``preprocess``, e.g. ImageNet normalisation).

    ``uses_validation``: True for a method that chooses settings on a validation split of its support; its
    ``fit`` then also takes ``groups`` (int [n], e.g. each product's (year, season) merged with its pixel
    copies), and holds whole groups out (:func:`fewshot.data.split.validation_split`) so that validation is
    as far from the support as the test is.
    """

    uses_validation: ClassVar[bool] = False

    def __init__(
        self, backbone: nn.Module | None = None, preprocess: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.preprocess = preprocess

    def embed(self, x: Tensor) -> Tensor:
        """[n, d] features pass through; [n, 3, H, W] images -> backbone features [n, D]."""
        if x.dim() == 2:
            return x if x.is_floating_point() else x.float()
        if x.dim() != 4:
            raise ValueError(f"expected features [n, d] or images [n, 3, H, W], got shape {tuple(x.shape)}")
        if self.backbone is None:
            raise ValueError(f"{type(self).__name__} got images but has no backbone; pass backbone=..., or "
                             "give cached features [n, d]")
        if x.dtype == torch.uint8:
            if self.preprocess is None:
                raise ValueError("uint8 images need preprocess=... (e.g. fewshot.images.augment's eval transform)")
            x = self.preprocess(x)
        return self.backbone(x)

    @abstractmethod
    def fit(self, support: Tensor, support_labels: Tensor) -> FewShotClassifier:
        """Store the state needed to classify into classes 0..max(support_labels); returns ``self``."""

    @abstractmethod
    def scores(self, query: Tensor) -> Tensor:
        """[n_query, n_classes] scores, higher = more likely."""

    def forward(self, query: Tensor) -> Tensor:
        return self.scores(query)

    def scores_episodes(self, support: Tensor, support_labels: Tensor, query: Tensor) -> Tensor | None:
        """Many episodes at once, when a method can: support [E, n_s, ...] sharing the labels [n_s], query
        [E, n_q, ...] -> scores [E, n_q, C], each episode as ``fit`` then ``scores`` would give it (to float
        rounding); None (the default): no batched path, the evaluator fits episode by episode."""
        return None

    @staticmethod
    def _n_classes(labels: Tensor) -> int:
        if labels.dim() != 1 or labels.numel() == 0:
            raise ValueError(f"support_labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}")
        return int(labels.max()) + 1


def fit_validated(method: FewShotClassifier, support: Tensor, support_labels: Tensor,
                  groups: object | None = None) -> FewShotClassifier:
    """``method.fit(support, support_labels)``, with ``groups=`` when the method chooses settings on a
    validation split (``uses_validation``) and groups are given."""
    if groups is not None and method.uses_validation:
        return method.fit(support, support_labels, groups=groups)
    return method.fit(support, support_labels)
