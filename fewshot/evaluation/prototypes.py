"""Nearest-prototype accuracy on batches of episodes (feature normalisation: :mod:`fewshot.methods.functional`).

Prototypes are class means of the support features (Snell, Swersky & Zemel 2017, "Prototypical Networks
for Few-shot Learning"); features may first be L2-normalised, or centred on the base classes' mean and
then L2-normalised (CL2N, Wang et al. 2019, "SimpleShot: Revisiting Nearest-Neighbor Classification for
Few-Shot Learning").
"""
from __future__ import annotations

import torch

from fewshot.methods.functional import DISTANCES, NORMALIZATIONS, normalize_features

__all__ = ["DISTANCES", "NORMALIZATIONS", "normalize_features", "prototype_accuracy"]


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
