"""Nearest-centroid head on a fixed embedding: SimpleShot (Wang et al. 2019, arXiv:1911.04623).

A supervised backbone (e.g. the two-stage baseline's stage-1 or stage-2 network) embeds the images; each
class is represented by the mean of its normalised support features; a query goes to the nearest mean.
With ``normalize="none"`` and ``distance="euclidean"`` this is also Chen et al. 2019's "Baseline"
evaluated with a nearest-centroid classifier.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from fewshot.methods.base import FewShotClassifier
from fewshot.methods.functional import (
    DISTANCES,
    NORMALIZATIONS,
    Distance,
    Normalization,
    centroid_scores,
    class_means,
    normalize_features,
)


class NearestCentroid(FewShotClassifier):
    """Prototypes = class means of normalised support features; scores = -squared distance or cosine.

    Args:
        normalize: ``"none"``, ``"l2n"`` or ``"cl2n"`` (centre with ``base_mean``, then L2-normalise).
        base_mean: [d], the mean feature of the base classes' train images; required by ``"cl2n"``.
        distance: ``"euclidean"`` (negative squared distance) or ``"cosine"``.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        *,
        normalize: Normalization = "none",
        base_mean: Tensor | None = None,
        distance: Distance = "euclidean",
        preprocess: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(backbone, preprocess)
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation {normalize!r}; known: {', '.join(NORMALIZATIONS)}")
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; known: {', '.join(DISTANCES)}")
        if (normalize == "cl2n") != (base_mean is not None):
            raise ValueError("normalize='cl2n' needs base_mean (the mean base-class feature, computed from the "
                             "base classes' train features), and the other normalisations take none")
        self.normalize = normalize
        self.distance = distance
        self.register_buffer("base_mean", None if base_mean is None else base_mean.detach().clone())
        self.register_buffer("prototypes", None)

    def _features(self, x: Tensor) -> Tensor:
        return normalize_features(self.embed(x), self.normalize, self.base_mean)

    @torch.no_grad()
    def fit(self, support: Tensor, support_labels: Tensor) -> NearestCentroid:
        """support: [n, d] or [n, 3, H, W]; support_labels: [n] in 0..C-1, every class present."""
        feats = self._features(support)
        self.prototypes = class_means(feats, support_labels, self._n_classes(support_labels))
        return self

    def prototype_settings(self) -> dict[str, object]:
        """What a batched nearest-prototype evaluator needs to score exactly as this classifier does
        (the keyword arguments of :func:`fewshot.evaluation.episodic_eval`)."""
        return {"normalize": self.normalize, "distance": self.distance, "base_mean": self.base_mean}

    def scores(self, query: Tensor) -> Tensor:
        """query: [q, d] or [q, 3, H, W] -> [q, C]."""
        if self.prototypes is None:
            raise RuntimeError("call fit(support, support_labels) before scores(query)")
        return centroid_scores(self._features(query), self.prototypes, self.distance)
