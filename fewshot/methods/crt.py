"""Classifier re-training, cRT (Kang et al. 2020, "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR).

Kang et al. keep the representation learnt with ordinary (instance-balanced) sampling and re-train only
the linear classifier with class-balanced sampling: every class is drawn equally often, whatever its
number of images, so the classifier's decision boundaries (and its bias) stop favouring the head
classes. Here the representation is the frozen backbone's features, given as support features [n, d].
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

from torch import Tensor, nn

from fewshot.methods.linear_head import LinearHead


class CRT(LinearHead):
    """A linear classifier (weight [C, d], bias [C]) on standardised features, trained with plain
    cross-entropy on class-balanced minibatches; scores ``x @ W.T + b`` [q, C].

    The weight decay (from ``weight_decays``) and the number of epochs are chosen on a stratified
    validation split of the support (``val_fraction``, ``seed``) by macro top-1, then the classifier is
    re-trained on the whole support; see :class:`fewshot.methods.linear_head.LinearHead` (and ``chosen``).

    Args:
        epochs: epochs of the validation runs (the refit runs the best of them); an epoch is ``n`` draws.
        lr: Adam's step size. batch_size: draws per step.
        weight_decays: the grid of L2 penalties on the weight.
        val_fraction: the share of each class's support items held out for the choices (0: none).
        seed: seeds the split and every minibatch draw.
        min_steps: the fewest optimiser steps of a training (more epochs on a small support).
    """

    balanced = True

    def __init__(self, backbone: nn.Module | None = None, preprocess: Callable[[Tensor], Tensor] | None = None, *,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 256,
                 weight_decays: Sequence[float] = (1e-4, 1e-2), val_fraction: float = 0.2, seed: int = 0,
                 min_steps: int = 300) -> None:
        super().__init__(backbone, preprocess, epochs=epochs, lr=lr, batch_size=batch_size,
                         weight_decays=weight_decays, taus=None, val_fraction=val_fraction, seed=seed,
                         min_steps=min_steps)

    def _post_hoc(self, logits: Tensor, weight: Tensor, bias: Tensor, log_prior: Tensor,
                  tau: float | None) -> Tensor:
        return logits + bias
