"""Tau-normalised classifier (Kang et al. 2020, "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR).

A linear classifier trained the ordinary way (instance-balanced sampling, plain cross-entropy) on a
long-tailed set learns larger weight norms for the frequent classes. Kang et al. rescale each class's
weight vector w_c to ``w_c / |w_c| ** tau`` after training, with no further training: ``tau = 1``
equalises the norms, ``tau = 0`` keeps the classifier. As in their method the bias is dropped (it is a
learnt class prior too, which the normalisation would otherwise leave in place).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

from torch import Tensor, nn

from fewshot.methods.linear_head import DEFAULT_TAUS, LinearHead
from fewshot.methods.longtail_functional import tau_norm_scale


class TauNorm(LinearHead):
    """Scores ``x @ tau_normalize(W, tau).T`` [q, C] of standardised features x [q, d], where W [C, d] is
    an instance-balanced, plain cross-entropy linear classifier (trained with a bias, which scoring
    drops). With ``taus=(0,)`` the scores are the unnormalised classifier's logits without its bias,
    ``x @ W.T``.

    ``tau`` (from ``taus``), the weight decay and the number of epochs are chosen on a stratified
    validation split of the support by macro top-1 (one training per weight decay: every ``tau`` rescales
    the same logits), then the classifier is re-trained on the whole support; without validation items
    ``tau = 1``. See :class:`fewshot.methods.linear_head.LinearHead` (and ``chosen``).

    Args:
        epochs, lr, batch_size, weight_decays, val_fraction, seed, min_steps: as for
            :class:`fewshot.methods.CRT`.
        taus: the grid of ``tau >= 0``.
    """

    def __init__(self, backbone: nn.Module | None = None, preprocess: Callable[[Tensor], Tensor] | None = None, *,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 256,
                 weight_decays: Sequence[float] = (1e-4, 1e-2), taus: Sequence[float] = DEFAULT_TAUS,
                 val_fraction: float = 0.2, seed: int = 0, min_steps: int = 300) -> None:
        super().__init__(backbone, preprocess, epochs=epochs, lr=lr, batch_size=batch_size,
                         weight_decays=weight_decays, taus=taus, val_fraction=val_fraction, seed=seed,
                         min_steps=min_steps)

    def _post_hoc(self, logits: Tensor, weight: Tensor, bias: Tensor, log_prior: Tensor,
                  tau: float | None) -> Tensor:
        # (x @ W.T) * |w_c|^-tau == x @ tau_normalize(W, tau).T, without a matmul per tau
        return logits * tau_norm_scale(weight, tau)
