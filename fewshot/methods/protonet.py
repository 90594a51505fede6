"""Prototypical Networks (Snell, Swersky & Zemel 2017, arXiv:1703.05175).

A class is the mean of its embedded support examples; a query is scored by its negative squared Euclidean
distance to each prototype. What makes it a ProtoNet rather than a nearest-centroid head on any embedding
is how the backbone is trained: episodically, each step sampling an N-way K-shot episode and minimising
the cross-entropy of the queries' softmax over those scores (:func:`episode_loss`). Training way may
exceed test way (Snell et al. train 20-way for 5-way tests).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from fewshot.methods.centroid import NearestCentroid
from fewshot.methods.functional import centroid_scores


class ProtoNet(NearestCentroid):
    """Nearest class mean under squared Euclidean distance, no feature normalisation (Snell et al. 2017)."""

    def __init__(
        self, backbone: nn.Module | None = None, preprocess: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        super().__init__(backbone, normalize="none", distance="euclidean", preprocess=preprocess)


def episode_logits(support: Tensor, query: Tensor, n_way: int, n_shot: int) -> Tensor:
    """Differentiable ProtoNet logits for one episode.

    support: [n_way * n_shot, d], ordered class by class (as :class:`fewshot.EpisodeSampler` yields);
    query: [q, d] -> [q, n_way].
    """
    if support.shape[0] != n_way * n_shot:
        raise ValueError(f"support has {support.shape[0]} rows, expected n_way * n_shot = {n_way * n_shot}")
    prototypes = support.reshape(n_way, n_shot, -1).mean(1)
    return centroid_scores(query, prototypes, "euclidean")


def episode_loss(
    support: Tensor, query: Tensor, query_labels: Tensor, n_way: int, n_shot: int, logit_scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """(mean cross-entropy over queries, number of correct queries) for one episode.

    ``logit_scale`` multiplies the negative squared distances before the softmax (a fixed temperature).
    Snell et al. use 1; a backbone pre-trained with a classifier has large feature norms, whose squared
    distances saturate the softmax, so fine-tuning one episodically wants a smaller scale (e.g. 1 / d).
    It changes no prediction, only the training signal.
    """
    logits = episode_logits(support, query, n_way, n_shot) * logit_scale
    loss = nn.functional.cross_entropy(logits, query_labels)
    return loss, (logits.argmax(1) == query_labels).sum()
