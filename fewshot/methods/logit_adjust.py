"""Logit adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment", ICLR).

A classifier trained with plain cross-entropy on long-tailed data estimates p(y | x), which carries the
training prior p(y); the balanced error is minimised by ``argmax_y logit_y - tau * log p(y)`` (tau = 1 in
theory, tuned in practice). Two variants:

- ``"post_hoc"`` (default): train an ordinary classifier once, subtract ``tau * log prior`` at scoring
  time; a whole grid of ``tau`` costs one training.
- ``"loss"``: train with the logit-adjusted loss, cross-entropy of ``logits + tau * log prior`` (tau = 1
  is Ren et al. 2020's balanced softmax, NeurIPS), and score the plain logits; each ``tau`` of the grid
  is a training of its own, which is why post hoc is the default.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Literal

from torch import Tensor, nn

from fewshot.methods.linear_head import DEFAULT_TAUS, LinearHead
from fewshot.methods.longtail_functional import adjust_logits

VARIANTS: tuple[str, ...] = ("post_hoc", "loss")


class LogitAdjust(LinearHead):
    """A linear classifier (weight [C, d], bias [C]) on standardised features x [q, d], instance-balanced
    sampling. ``"post_hoc"``: plain cross-entropy, scores ``x @ W.T + b - tau * log_prior`` [q, C], where
    ``log_prior`` [C] is the log of the support's class frequencies (of the training part when choosing
    on validation); ``taus=(0,)`` gives the plain classifier. ``"loss"``: trained with
    :func:`~fewshot.methods.longtail_functional.logit_adjusted_cross_entropy`, scores ``x @ W.T + b``.

    ``tau``, the weight decay and the number of epochs are chosen on a stratified validation split of the
    support by macro top-1, then the classifier is re-trained on the whole support; without validation
    items ``tau = 1`` (Menon et al.'s default). See :class:`fewshot.methods.linear_head.LinearHead`.

    Args:
        epochs, lr, batch_size, weight_decays, val_fraction, seed, min_steps: as for
            :class:`fewshot.methods.CRT`.
        taus: the grid of ``tau >= 0``. variant: ``"post_hoc"`` or ``"loss"`` (see the module docstring).
    """

    def __init__(self, backbone: nn.Module | None = None, preprocess: Callable[[Tensor], Tensor] | None = None, *,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 256,
                 weight_decays: Sequence[float] = (1e-4, 1e-2), taus: Sequence[float] = DEFAULT_TAUS,
                 variant: Literal["post_hoc", "loss"] = "post_hoc", val_fraction: float = 0.2,
                 seed: int = 0, min_steps: int = 300) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        super().__init__(backbone, preprocess, epochs=epochs, lr=lr, batch_size=batch_size,
                         weight_decays=weight_decays, taus=taus, val_fraction=val_fraction, seed=seed,
                         min_steps=min_steps)
        self.variant = variant
        self.tau_in_loss = variant == "loss"

    def _post_hoc(self, logits: Tensor, weight: Tensor, bias: Tensor, log_prior: Tensor,
                  tau: float | None) -> Tensor:
        if self.tau_in_loss:
            return logits + bias
        return adjust_logits(logits + bias, log_prior, tau)
