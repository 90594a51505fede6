"""Pure tensor functions behind the nearest-centroid methods (no state, no modules).

Shapes: ``n`` items, ``d`` feature dimensions, ``C`` classes. Leading batch dimensions (episodes) are
allowed wherever noted, so the same maths serves one support set and a chunk of episodes.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Normalization = Literal["none", "l2n", "cl2n"]
Distance = Literal["euclidean", "cosine"]
NORMALIZATIONS: tuple[str, ...] = ("none", "l2n", "cl2n")
DISTANCES: tuple[str, ...] = ("euclidean", "cosine")


def normalize_features(x: Tensor, mode: Normalization = "none", base_mean: Tensor | None = None) -> Tensor:
    """Feature normalisation of SimpleShot (Wang et al. 2019, arXiv:1911.04623).

    ``x``: [..., d]. ``"l2n"`` scales each vector to unit L2 norm; ``"cl2n"`` first subtracts
    ``base_mean`` ([d], the mean feature of the base classes' train images), then L2-normalises.
    ``base_mean`` is required by ``"cl2n"`` and refused by the others (a silently ignored mean would hide
    a configuration mistake).
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {mode!r}; known: {', '.join(NORMALIZATIONS)}")
    if mode == "cl2n":
        if base_mean is None:
            raise ValueError("normalize='cl2n' needs base_mean, the [d] mean feature of the base classes' "
                             "train images; pass it, or use normalize='l2n'")
        base_mean = torch.as_tensor(base_mean, dtype=x.dtype, device=x.device)
        if base_mean.shape != x.shape[-1:]:
            raise ValueError(f"base_mean has shape {tuple(base_mean.shape)}, features have d={x.shape[-1]}")
        x = x - base_mean
    elif base_mean is not None:
        raise ValueError(f"base_mean is only used with normalize='cl2n', not {mode!r}; drop it or switch")
    if mode == "none":
        return x
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def class_means(features: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Per-class mean of ``features`` [n, d] with ``labels`` [n] in 0..n_classes-1 -> [n_classes, d].

    Raises when a class has no item: its prototype would be undefined (a zero vector would silently win
    or lose every comparison).
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be [n, d] and labels [n]; got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    labels = labels.to(features.device, torch.long)
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}; got {int(labels.min())}..{int(labels.max())}")
    counts = torch.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {empty[:10]} have no support item; every class needs at least one")
    sums = torch.zeros(n_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    return sums / counts.unsqueeze(1).to(features.dtype)


def centroid_scores(
    query: Tensor,
    prototypes: Tensor,
    distance: Distance = "euclidean",
    *,
    exact: bool = True,
    classes_first: bool = False,
) -> Tensor:
    """Scores (higher = more likely) of ``query`` [..., q, d] against ``prototypes`` [..., C, d] -> [..., q, C].

    The one place the nearest-prototype score maths lives: the methods' ``scores``, the ProtoNet loss and
    the fast episodic evaluator all call it. ``"euclidean"``: negative squared Euclidean distance (Snell
    et al. 2017, Prototypical Networks); ``"cosine"``: cosine similarity (Wang et al. 2019, SimpleShot).

    Args:
        exact: ``False`` drops the terms that are the same for every prototype of a query: ``|q|^2`` (and
            the clamp at 0) for euclidean, giving ``2 q.p - |p|^2``; ``1 / |q|`` for cosine, giving
            ``q.p / |p|``. Each query ranks the prototypes the same way (up to rounding) but the values
            are no longer distances, so only argmax/top-k may use them; it saves a pass over the queries.
        classes_first: return [..., C, q]. A reduction over classes (dim -2) then runs across contiguous
            rows, vectorised, instead of within each short row: the fast evaluator's layout.
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; known: {', '.join(DISTANCES)}")
    if distance == "cosine":
        prototypes = torch.nn.functional.normalize(prototypes, dim=-1)
        if exact:
            query = torch.nn.functional.normalize(query, dim=-1)
    dots = prototypes @ query.mT if classes_first else query @ prototypes.mT
    if distance == "cosine":
        return dots
    # ||q - p||^2 = ||q||^2 - 2 q.p + ||p||^2: one matmul instead of a [..., q, C, d] difference tensor
    p_sq = (prototypes * prototypes).sum(-1).unsqueeze(-1 if classes_first else -2)
    if not exact:
        return dots.mul_(2).sub_(p_sq)  # in place: dots is ours, and matmul's backward does not need it
    q_sq = (query * query).sum(-1).unsqueeze(-2 if classes_first else -1)
    return -(q_sq - 2 * dots + p_sq).clamp_min(0)
