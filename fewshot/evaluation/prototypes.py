"""Nearest-prototype maths on batches of episodes: feature normalisation and prototype accuracy.

Prototypes are class means of the support features (Snell, Swersky & Zemel 2017, "Prototypical Networks
for Few-shot Learning"); features may first be L2-normalised, or centred on the base classes' mean and
then L2-normalised (CL2N, Wang et al. 2019, "SimpleShot: Revisiting Nearest-Neighbor Classification for
Few-Shot Learning").
"""
from __future__ import annotations

import torch

NORMALIZATIONS = ("none", "l2n", "cl2n")
DISTANCES = ("euclidean", "cosine")


def normalize_features(
    features: torch.Tensor, normalize: str = "none", base_mean: torch.Tensor | None = None
) -> torch.Tensor:
    """features [n, d] -> [n, d]: ``"none"``, ``"l2n"`` (x / |x|) or ``"cl2n"`` ((x - m) / |x - m|).

    ``base_mean`` [d] (m) is required for CL2N: the mean feature of the base classes' train images.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} is not one of {NORMALIZATIONS}")
    if normalize == "cl2n":
        if base_mean is None:
            raise ValueError("normalize='cl2n' needs base_mean [d]: the mean feature of the base classes' train images")
        base_mean = torch.as_tensor(base_mean, dtype=features.dtype, device=features.device)
        if base_mean.shape != features.shape[1:]:
            raise ValueError(f"base_mean has shape {tuple(base_mean.shape)}, features are [n, {features.shape[1]}]")
        features = features - base_mean
    elif base_mean is not None:
        raise ValueError(f"base_mean is only used with normalize='cl2n', not {normalize!r}; drop it or switch")
    if normalize == "none":
        return features
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def prototype_accuracy(support: torch.Tensor, query: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Nearest-prototype accuracy of a batch of episodes.

    support: [E, W, S, d]; query: [E, W * Q, d], way by way (the first Q queries have label 0, ...).
    Returns [E] float64: the fraction of each episode's queries whose nearest prototype (the mean of
    its way's support; squared Euclidean distance or cosine) is their own way's. Ties go to the lower
    way index, as ``argmax`` breaks them.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {DISTANCES}")
    n_ep, way = support.shape[0], support.shape[1]
    if query.ndim != 3 or query.shape[0] != n_ep or query.shape[1] % way:
        raise ValueError(f"query must be [{n_ep}, {way} * n_query, d], got {tuple(query.shape)}")
    protos = support.mean(dim=2)  # [E, W, d]
    if distance == "cosine":
        protos = protos / protos.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # [E, W, W*Q]: ways on dim 1, so the max below reduces across rows (vectorised) not within them.
    score = torch.bmm(protos, query.transpose(1, 2))
    if distance == "euclidean":
        # -|q - p|^2 = 2 q.p - |p|^2 - |q|^2, and |q|^2 is the same for every prototype of a query.
        score.mul_(2).sub_((protos * protos).sum(-1, keepdim=True))
    # For cosine, |q| is the same for every prototype of a query, so q.p/|p| ranks like q.p/(|q||p|).
    pred = score.max(dim=1).indices  # first maximum on ties
    target = torch.arange(way, device=query.device).repeat_interleave(query.shape[1] // way)
    return (pred == target).sum(dim=1).to(torch.float64) / query.shape[1]
