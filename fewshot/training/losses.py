"""Class weights and sampling weights for long-tailed training. Pure functions of the training labels.

- ``inverse_frequency_weights``: the seed notebook's ``max_count / count``.
- ``effective_number_weights``: Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
  Samples" (CVPR): w_c = (1 - beta) / (1 - beta^n_c), normalised so the weights sum to the number of
  classes.
- ``balanced_sample_weights``: per-sample weights 1 / n_{y_i}, so that sampling with replacement draws
  every class equally often (the seed's oversampling idea, done by the sampler instead of copying files).
- ``logit_adjusted_cross_entropy`` and ``log_prior``: Menon et al. 2021, "Long-tail learning via logit
  adjustment" (ICLR), the loss of ``TrainConfig(loss="logit_adjusted")``. They live with the frozen-feature
  heads in ``fewshot.methods.longtail_functional`` (the layer below), which use them too.

A class with no training sample gets weight 0: it cannot contribute to the loss anyway, and an infinite
weight would poison the normalisation.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fewshot.methods.longtail_functional import log_prior, logit_adjusted_cross_entropy

CLASS_WEIGHTS = ("none", "inverse", "effective")
LOSSES = ("ce", "logit_adjusted")


def class_counts(labels: Sequence[int] | np.ndarray | torch.Tensor, n_classes: int) -> torch.Tensor:
    """Number of samples per class, int64 [n_classes]; labels must lie in [0, n_classes)."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels range over [{int(y.min())}, {int(y.max())}] but n_classes={n_classes}; "
                         "labels must be 0..n_classes-1 (remap them first)")
    return torch.bincount(y, minlength=n_classes)


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """The seed's weights max_count / count, float32 [C]; 0 for empty classes."""
    counts = counts.to(torch.float64)
    weights = torch.where(counts > 0, counts.max() / counts.clamp(min=1), torch.zeros_like(counts))
    return weights.to(torch.float32)


def effective_number_weights(counts: torch.Tensor, beta: float = 0.999) -> torch.Tensor:
    """Cui et al. 2019 weights (1 - beta) / (1 - beta^n_c), scaled to sum to C; float32 [C], 0 for
    empty classes. beta = 0 gives equal weights, beta -> 1 tends to inverse frequency."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"effective-number beta={beta} must lie in [0, 1) (Cui et al. use 0.9 .. 0.9999)")
    counts = counts.to(torch.float64)
    effective = 1.0 - torch.pow(torch.as_tensor(beta, dtype=torch.float64), counts)
    raw = torch.where(counts > 0, (1.0 - beta) / effective.clamp(min=1e-300), torch.zeros_like(counts))
    if raw.sum() == 0:
        raise ValueError("every class has zero samples; there is nothing to weight")
    return (raw * (counts.numel() / raw.sum())).to(torch.float32)


def class_weights(labels: Sequence[int] | np.ndarray | torch.Tensor, n_classes: int, kind: str,
                  beta: float = 0.999) -> torch.Tensor | None:
    """Cross-entropy class weights [C] by name: "none" (returns None), "inverse" or "effective"."""
    if kind not in CLASS_WEIGHTS:
        raise ValueError(f"unknown class_weights {kind!r}; known: {', '.join(CLASS_WEIGHTS)}")
    if kind == "none":
        return None
    counts = class_counts(labels, n_classes)
    return inverse_frequency_weights(counts) if kind == "inverse" else effective_number_weights(counts, beta)


def balanced_sample_weights(labels: Sequence[int] | np.ndarray | torch.Tensor,
                            n_classes: int | None = None) -> torch.Tensor:
    """Per-sample weights 1 / count[y_i], float64 [N]: every present class gets the same total mass."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
    if y.numel() == 0:
        raise ValueError("balanced_sample_weights got no labels")
    counts = class_counts(y, int(y.max()) + 1 if n_classes is None else n_classes)
    return 1.0 / counts[y].to(torch.float64)


__all__ = ["CLASS_WEIGHTS", "LOSSES", "balanced_sample_weights", "class_counts", "class_weights",
           "effective_number_weights", "inverse_frequency_weights", "log_prior", "logit_adjusted_cross_entropy"]
