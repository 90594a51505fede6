"""ANIL, "Almost No Inner Loop" (Raghu, Raghu, Bengio & Vinyals 2020, "Rapid Learning or Feature Reuse?
Towards Understanding the Effectiveness of MAML", ICLR, arXiv:1909.09157), built on learn2learn.

Raghu et al. found that MAML's inner loop barely changes the body: ANIL adapts only the head in the inner
loop, and meta-learns the body in the outer loop only (through the adapted head, second-order unless
``first_order``). As in :class:`~fewshot.methods.maml.MAML`, the head [n_way, d] + [n_way] starts at zero
in every episode (Kao et al. 2022; Ye & Chao 2022), so its inner loop is a few steps of logistic
regression on the body's features, and the body's features are computed once per episode.

    model = ANIL(body, inner_lr=0.5, adaptation_steps=10)
    model.fit(support, support_labels).scores(query)     # the body is left unchanged
    loss, correct = model.query_loss(support, support_labels, query, query_labels)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fewshot.methods.maml import MAML, detach_, zero_head


class ANIL(MAML):
    """MAML whose inner loop adapts only the zero-initialised linear head on the body's features.

    Args:
        body: meta-learned module, inputs [n, ...] -> features [n, d]; never changed by ``fit``.
        inner_lr, adaptation_steps: the head's inner loop (SGD steps on the support's mean cross-entropy).
        first_order: in :meth:`query_loss`, treat the adapted head as a constant of the body (the body then
            learns from the queries' features only).
    """

    def __init__(self, body: nn.Module, *, inner_lr: float = 0.1, adaptation_steps: int = 5,
                 first_order: bool = False) -> None:
        super().__init__(body, inner_lr=inner_lr, adaptation_steps=adaptation_steps, first_order=first_order)

    def _adapted_head(self, features: Tensor, support_labels: Tensor, second_order: bool) -> nn.Module:
        """The zero head after the inner loop on support features [n_s, d] -> a module [n, d] -> [n, n_way]."""
        head = zero_head(features.shape[-1], self._n_classes(support_labels), features)
        return self._inner_loop(self._wrap(head), features, support_labels, second_order)

    def adapt(self, support: Tensor, support_labels: Tensor, *, second_order: bool) -> nn.Module:
        """query [n, ...] -> logits [n, n_way]: the (shared, unadapted) body, then the adapted head."""
        head = self._adapted_head(self.body(support), support_labels, second_order)
        return nn.Sequential(self.body, head)

    def _start(self, body: dict, xs: Tensor, call: object, buffers: dict, n_way: int, d: int) -> dict:
        """ANIL's inner loop starts from a zero head on the body's (fixed) support features, computed once."""
        return {"w": xs.new_zeros(n_way, d), "b": xs.new_zeros(n_way)}

    def _features(self, call: object, params: dict, buffers: dict, x: Tensor) -> Tensor:
        return self.body(x)  # the body does not adapt: outside the inner loop's parameters

    def fit(self, support: Tensor, support_labels: Tensor) -> ANIL:
        with torch.no_grad():  # the body does not adapt: its support features need no graph
            features = self.body(support)
        with torch.enable_grad():
            head = self._adapted_head(features, support_labels, second_order=False)
        # Only the head clone is detached: the body in the Sequential is the model's own.
        self._adapted = (nn.Sequential(self.body, detach_(head)),)
        return self
