"""Train a linear classifier on frozen features: the one training loop of the long-tail linear heads.

Instance-balanced (a permutation per epoch) or class-balanced sampling (Kang et al. 2020, "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR: cRT's sampler), plain or
logit-adjusted cross-entropy (Menon et al. 2021, ICLR), and the choice of the settings on validation
data, epoch by epoch. Functions only: all randomness from a ``torch.Generator``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fewshot.methods.longtail_functional import log_prior, logit_adjusted_cross_entropy, macro_top1

OnEpoch = Callable[[int, Tensor, Tensor], None]  # (epoch, weight [C, d], bias [C]) after each epoch


def class_balanced_indices(labels: Tensor, n_draws: int, generator: torch.Generator) -> Tensor:
    """[n_draws] positions into ``labels [n]``: a class drawn uniformly among the present ones, then one
    of its items uniformly, with replacement (Kang et al.'s class-balanced sampling). On the CPU."""
    labels = labels.cpu()
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    which = torch.randint(len(classes), (n_draws,), generator=generator)
    within = (torch.rand(n_draws, generator=generator, dtype=torch.float64) * counts[which]).long()
    return order[starts[which] + within.clamp_max(counts[which] - 1)]


def _adam(groups: list[dict], lr: float) -> torch.optim.Adam:
    """Adam, fused (one kernel a step instead of a dozen passes over W) where this torch has it."""
    try:
        return torch.optim.Adam(groups, lr=lr, fused=True)
    except RuntimeError:  # e.g. the CPU before torch 2.4
        return torch.optim.Adam(groups, lr=lr)


def train_linear(features: Tensor, labels: Tensor, n_classes: int, *, epochs: int = 10, lr: float = 1e-3,
                 batch_size: int = 256, weight_decay: float = 0.0, balanced: bool = False,
                 loss_log_prior: Tensor | None = None, loss_tau: float = 1.0, generator: torch.Generator,
                 bias: bool = True, on_epoch: OnEpoch | None = None) -> tuple[Tensor, Tensor]:
    """A linear classifier ``features [n, d] -> [n, C]`` by mini-batch Adam; returns (weight [C, d], bias [C]).

    An epoch is ``n`` draws in ``ceil(n / batch_size)`` steps: a fresh permutation, or with ``balanced``
    class-balanced draws (:func:`class_balanced_indices`, cRT's sampler). The loss is plain cross-entropy,
    or with ``loss_log_prior`` [C] :func:`logit_adjusted_cross_entropy` with ``loss_tau``.
    ``weight_decay`` is an L2 penalty ``weight_decay / 2 * |W|^2`` on the weight only (Adam's coupled
    decay), so it means the same for any ``lr``. ``bias=False`` keeps the bias at zero. ``on_epoch(epoch,
    weight, bias)`` (epoch 1-based; detached live tensors, copy to keep) sees the model after each epoch.

    The weight starts at zero and the bias where the loss is lowest for a zero weight: the log of the
    sampled class frequencies (0 when ``balanced``) minus ``loss_tau * loss_log_prior``. Adam moves a
    bias by about ``lr`` a step, far too slowly to learn from zero a prior spanning several nats, and
    the post-hoc adjustments assume the prior is in the logits. So the result is a function of the data,
    the settings and ``generator`` alone, which draws every minibatch (the global RNG is not touched).

    Adam rather than SGD: with a constant step size it fits in a few hundred steps whatever the feature
    scale and conditioning (SGD's good learning rate moves with both), and the constant rate makes
    training for ``k`` epochs exactly the first ``k`` epochs of a longer run, so the best epoch chosen
    on validation can be retrained as it was.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1] or not len(labels) or epochs < 1 or batch_size < 1 \
            or not 0 <= int(labels.min()) <= int(labels.max()) < n_classes:
        raise ValueError(f"train_linear needs features [n, d], labels [n] in 0..n_classes-1 (n >= 1), epochs >= 1 "
                         f"and batch_size >= 1; got {tuple(features.shape)}, {tuple(labels.shape)}, {epochs}, "
                         f"{batch_size}")
    n, d = features.shape
    device, dtype = features.device, features.dtype
    labels = labels.to(device, torch.long)
    size = min(batch_size, n)
    # callers may fit under no_grad or inference_mode (evaluators do); training needs autograd
    with torch.inference_mode(False), torch.enable_grad():
        features = features.clone() if features.is_inference() else features
        w = torch.zeros(n_classes, d, device=device, dtype=dtype, requires_grad=True)
        b = torch.zeros(n_classes, device=device, dtype=dtype)
        if bias:  # start at the loss's minimiser for W = 0 (see the docstring)
            if not balanced:
                b += log_prior(torch.bincount(labels, minlength=n_classes), dtype).to(device)
            if loss_log_prior is not None:
                b -= loss_tau * loss_log_prior.to(b)
        b.requires_grad_(bias)
        groups = [{"params": [w], "weight_decay": weight_decay}]
        groups += [{"params": [b], "weight_decay": 0.0}] if bias else []
        opt = _adam(groups, lr)
        for epoch in range(1, epochs + 1):
            order = class_balanced_indices(labels, n, generator) if balanced else \
                torch.randperm(n, generator=generator)
            for pos in order.to(device).split(size):
                # index_select: several times faster than features[pos] on the CPU
                logits = torch.addmm(b, features.index_select(0, pos), w.T)
                target = labels.index_select(0, pos)
                loss = F.cross_entropy(logits, target) if loss_log_prior is None else \
                    logit_adjusted_cross_entropy(logits, target, loss_log_prior, loss_tau)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if on_epoch is not None:
                on_epoch(epoch, w.detach(), b.detach())
    return w.detach().clone(), b.detach().clone()


def select_on_validation(train: Callable[[float, float | None, OnEpoch], object],
                         post_hoc: Callable[[Tensor, Tensor, Tensor, float | None], Tensor],
                         val_features: Tensor, val_labels: Tensor, weight_decays: Sequence[float],
                         loss_taus: Sequence[float | None], post_taus: Sequence[float | None]) -> dict[str, Any]:
    """The settings with the best validation macro top-1 over the grid, every epoch a candidate.

    ``train(weight_decay, loss_tau, on_epoch)`` runs one training per weight decay and loss tau, calling
    ``on_epoch(epoch, weight, bias)`` after each epoch; that epoch's head is scored on ``val_features``
    [m, d] with ``post_hoc(val_features @ weight.T, weight, bias, tau)`` -> [m, C] for every post-hoc
    tau (one matmul for the whole tau grid). The first best in grid order, then the earliest epoch, wins.
    Returns {"weight_decay", "epochs", "val_macro_top1", "tau"}; ``tau`` is the loss tau when that is
    not None, else the post-hoc one (None when neither grid has a tau).
    """
    best: dict[str, Any] = {}
    for weight_decay in weight_decays:
        for loss_tau in loss_taus:
            def on_epoch(epoch: int, weight: Tensor, bias: Tensor) -> None:
                logits = val_features @ weight.T
                for tau in post_taus:
                    score = macro_top1(post_hoc(logits, weight, bias, tau), val_labels)
                    if not best or score > best["val_macro_top1"]:
                        best.update(weight_decay=weight_decay, epochs=epoch, val_macro_top1=score,
                                    tau=tau if loss_tau is None else loss_tau)
            train(weight_decay, loss_tau, on_epoch)
    return best
