"""Pure tensor functions behind the long-tail linear heads (cRT, tau-normalisation, logit adjustment).

Shapes: ``n`` items, ``d`` feature dimensions, ``C`` classes. References:
- Kang et al. 2020, "Decoupling Representation and Classifier for Long-Tailed Recognition" (ICLR):
  classifier re-training (cRT) with class-balanced sampling, and tau-normalised classifiers.
- Menon et al. 2021, "Long-tail learning via logit adjustment" (ICLR): post-hoc adjustment and the
  logit-adjusted loss; its tau = 1 case is the balanced softmax of Ren et al. 2020 (NeurIPS).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def tau_norm_scale(weight: Tensor, tau: float) -> Tensor:
    """[C, d] -> [C]: ``1 / |w_c| ** tau``, the per-class factor of :func:`tau_normalize`; so the
    tau-normalised logits ``x @ tau_normalize(W, tau).T`` are ``(x @ W.T) * tau_norm_scale(W, tau)``,
    which scores a grid of ``tau`` with one matmul. Norms are clamped at 1e-12, so a zero row gives no NaN.
    """
    if tau < 0:
        raise ValueError(f"tau={tau} must be >= 0")
    return weight.norm(dim=1).clamp_min(1e-12).pow(-tau)


def tau_normalize(weight: Tensor, tau: float) -> Tensor:
    """[C, d] -> [C, d]: each class's weight vector divided by its L2 norm ** ``tau`` (Kang et al. 2020).

    ``tau = 0`` returns ``weight`` unchanged, ``tau = 1`` gives unit-norm rows (a zero row stays zero).
    """
    if tau == 0:
        return weight
    return weight * tau_norm_scale(weight, tau).unsqueeze(1)


def log_prior(counts: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Log class frequencies ``log(counts / counts.sum())`` [C] (in ``dtype``, default torch's default
    dtype; computed in float64) from per-class counts [C].

    A class with no item is counted as if it had one (``log(1 / total)``, the rarest a seen class can
    be) rather than ``-inf``: an infinite prior would give it +inf adjusted logits and NaN losses. The
    total stays the true one, so the seen classes' priors are exact.
    """
    counts = torch.as_tensor(counts)
    if counts.dim() != 1 or counts.numel() == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"counts must be a non-empty 1-D tensor of non-negative counts with a positive "
                         f"total; got {counts.tolist() if counts.numel() <= 20 else tuple(counts.shape)}")
    counts = counts.to(torch.float64)
    return (counts.clamp_min(1.0) / counts.sum()).log().to(dtype or torch.get_default_dtype())


def adjust_logits(logits: Tensor, log_prior: Tensor, tau: float) -> Tensor:
    """Post-hoc logit adjustment (Menon et al. 2021): ``logits [n, C] - tau * log_prior [C]``."""
    return logits - tau * log_prior.to(logits)


def logit_adjusted_cross_entropy(logits: Tensor, targets: Tensor, log_prior: Tensor, tau: float = 1.0,
                                 weight: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits [n, C] + tau * log_prior [C]`` against ``targets [n]`` (Menon et
    al. 2021's logit-adjusted loss; ``tau = 1`` is Ren et al. 2020's balanced softmax). The model's own
    logits stay prior-free, so they are scored as they are. ``weight`` [C] and ``label_smoothing`` as in
    :func:`torch.nn.functional.cross_entropy`."""
    return F.cross_entropy(logits + tau * log_prior.to(logits), targets, weight=weight,
                           label_smoothing=label_smoothing)


def macro_top1(scores: Tensor, labels: Tensor) -> float:
    """Mean over the classes present in ``labels [n]`` of the top-1 accuracy of ``scores [n, C]``."""
    hits = (scores.argmax(1) == labels).to(torch.float64)
    n_classes = max(scores.shape[1], int(labels.max()) + 1)
    per_class = torch.zeros(n_classes, dtype=torch.float64, device=scores.device).index_add_(0, labels, hits)
    counts = torch.bincount(labels, minlength=n_classes)
    present = counts > 0
    return float((per_class[present] / counts[present]).mean())
