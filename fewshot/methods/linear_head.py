"""What the long-tail linear heads (cRT, tau-norm, logit adjustment) share: standardise the support
features, choose the settings on a validation split of the support, then refit on all of it. A subclass
says how a trained head scores (:meth:`LinearHead._post_hoc`), how it samples, and whether its ``tau``
acts after training (a grid scored on one training's logits) or in the loss (one training per ``tau``).
"""
from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from fewshot.data.validation import validation_split
from fewshot.methods.base import FewShotClassifier
from fewshot.methods.linear_training import OnEpoch, select_on_validation, train_linear
from fewshot.methods.longtail_functional import log_prior

DEFAULT_TAUS: tuple[float, ...] = tuple(i / 4 for i in range(9))  # 0.0, 0.25, ..., 2.0


class LinearHead(FewShotClassifier):
    """A linear classifier on standardised frozen features, its settings chosen on the support alone.

    ``fit``: standardise with the support's mean and std (stored: queries get the same transform); split
    the support with ``validation_split(labels, val_fraction, seed, groups=groups)`` (stratified, or whole
    groups held out when ``fit`` gets ``groups``); for each weight decay of the grid
    (and each loss ``tau``, if any) train on the train part, scoring the validation part after every
    epoch and for every post-hoc ``tau`` by macro top-1 (mean over the classes with validation items);
    keep the first best (grid order, then the earliest epoch); retrain on the whole support with that
    weight decay for that many epochs. Without validation items (one image per class, ``val_fraction=0``)
    it falls back to the first weight decay, all epochs and ``tau = 1`` (the grid's value nearest 1).
    ``chosen`` reports the choice, e.g. ``{"weight_decay": 1e-4, "epochs": 7, "tau": 0.75,
    "val_macro_top1": 0.81, "at_grid_edge": ["tau"]}`` (no ``tau`` for cRT; ``val_macro_top1`` None and no
    ``at_grid_edge`` on the fallback; ``at_grid_edge`` lists the settings chosen at an end of their grid, the
    epochs among them when the best epoch was the first or the last one trained).

    A training runs ``epochs`` epochs, or more if that is under ``min_steps`` optimiser steps (a small
    support's epoch is a step or two, too few for Adam's ~``lr``-sized steps). Defaults: on the
    catalogue's EfficientNet-Lite0 features (23,755 x 1,280, 106 classes) the best epochs were 3-9, a
    larger ``lr`` did worse, and a fit takes ~10 s on 2 CPU cores. Buffers: ``feature_mean``,
    ``feature_std`` [d], ``weight`` [C, d], ``bias`` [C], ``log_prior`` [C] (log class frequencies).
    """

    uses_validation: ClassVar[bool] = True
    balanced: ClassVar[bool] = False  # class-balanced minibatches (cRT) instead of permutations
    tau_in_loss: bool = False  # True: one training per tau (the logit-adjusted loss)

    def __init__(self, backbone: nn.Module | None = None, preprocess: Callable[[Tensor], Tensor] | None = None, *,
                 epochs: int = 10, lr: float = 1e-3, batch_size: int = 256,
                 weight_decays: Sequence[float] = (1e-4, 1e-2), taus: Sequence[float] | None = None,
                 val_fraction: float = 0.2, seed: int = 0, min_steps: int = 300) -> None:
        super().__init__(backbone, preprocess)
        if min(epochs, batch_size, min_steps + 1) < 1 or any(int(v) != v for v in (epochs, batch_size, min_steps)):
            raise ValueError(f"epochs={epochs} and batch_size={batch_size} must be integers >= 1, "
                             f"min_steps={min_steps} an integer >= 0")
        for name, grid in (("weight_decays", weight_decays), ("taus", taus)):
            if grid is not None and (len(grid) == 0 or any(not v >= 0 for v in grid)):
                raise ValueError(f"{name} must be a non-empty grid of values >= 0, got {list(grid)}")
        if not lr > 0 or not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"lr={lr} must be > 0" if not lr > 0 else
                             f"val_fraction={val_fraction} must lie in [0, 1)")
        self.epochs, self.lr, self.batch_size, self.min_steps = int(epochs), float(lr), int(batch_size), int(min_steps)
        self.weight_decays = tuple(float(v) for v in weight_decays)
        self.taus = None if taus is None else tuple(float(v) for v in taus)
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        self.chosen: dict[str, Any] = {}
        for name in ("feature_mean", "feature_std", "weight", "bias", "log_prior"):
            self.register_buffer(name, None)

    @abstractmethod
    def _post_hoc(self, logits: Tensor, weight: Tensor, bias: Tensor, log_prior: Tensor,
                  tau: float | None) -> Tensor:
        """Scores [n, C] from the bias-free logits ``x @ weight.T`` [n, C] of standardised features, the
        head (weight [C, d], bias [C]), the training data's ``log_prior`` [C] and a post-hoc ``tau``."""

    def _epochs_for(self, n: int) -> int:
        return max(self.epochs, math.ceil(self.min_steps / math.ceil(n / self.batch_size)))

    def _train(self, x: Tensor, y: Tensor, prior: Tensor, weight_decay: float, epochs: int, loss_tau: float | None,
               on_epoch: OnEpoch | None = None) -> tuple[Tensor, Tensor]:
        return train_linear(x, y, len(prior), epochs=epochs, lr=self.lr, batch_size=self.batch_size,
                            weight_decay=weight_decay, balanced=self.balanced, loss_tau=loss_tau or 0.0,
                            loss_log_prior=None if loss_tau is None else prior,
                            generator=torch.Generator().manual_seed(self.seed), on_epoch=on_epoch)

    def _choose(self, x: Tensor, y: Tensor, n_classes: int, groups: np.ndarray | None) -> dict[str, Any]:
        """The settings chosen on a validation split of the support (or the fallback without one)."""
        train, val = (torch.from_numpy(a).to(x.device) for a in
                      validation_split(y.cpu().numpy(), self.val_fraction, self.seed, groups=groups))
        if len(val) == 0:
            chosen = {"weight_decay": self.weight_decays[0], "epochs": self._epochs_for(len(y)), "val_macro_top1": None}
            return chosen if self.taus is None else {**chosen, "tau": min(self.taus, key=lambda t: abs(t - 1.0))}
        xt, yt = x[train], y[train]
        prior = log_prior(torch.bincount(yt, minlength=n_classes), x.dtype).to(x.device)

        def train_on_split(weight_decay: float, loss_tau: float | None, on_epoch: OnEpoch) -> None:
            self._train(xt, yt, prior, weight_decay, self._epochs_for(len(yt)), loss_tau, on_epoch)

        def post_hoc(logits: Tensor, weight: Tensor, bias: Tensor, tau: float | None) -> Tensor:
            return self._post_hoc(logits, weight, bias, prior, tau)

        taus = self.taus or (None,)
        loss_taus, post_taus = (taus, (None,)) if self.tau_in_loss else ((None,), taus)
        chosen = select_on_validation(train_on_split, post_hoc, x[val], y[val], self.weight_decays, loss_taus,
                                      post_taus)
        if self.taus is None:
            chosen.pop("tau")
        # a choice at the end of its grid (or the last epoch trained) may mean the grid stopped too early
        grids = {"weight_decay": self.weight_decays, "tau": self.taus or (),
                 "epochs": tuple(range(1, self._epochs_for(len(yt)) + 1))}
        chosen["at_grid_edge"] = [k for k, grid in grids.items()
                                  if len(grid) > 1 and k in chosen and chosen[k] in (min(grid), max(grid))]
        return chosen

    def fit(self, support: Tensor, support_labels: Tensor, groups: np.ndarray | None = None) -> LinearHead:
        """support: [n, d] features (or [n, 3, H, W] images); support_labels: [n] in 0..C-1, every class
        present; groups: optional int [n] (see :class:`FewShotClassifier`). The same input gives the same state
        (all randomness from ``seed``)."""
        with torch.no_grad():
            feats = self.embed(support).detach()
        feats = feats if feats.dtype in (torch.float32, torch.float64) else feats.float()  # no fp16 Adam
        labels, counts = _check_labels(feats, torch.as_tensor(support_labels))
        # a feature constant on the support keeps scale 1: its weight gets no gradient and stays 0
        mean, std = feats.mean(0), feats.std(0, unbiased=False)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        x = (feats - mean) / std
        chosen = self._choose(x, labels, len(counts), groups)
        prior = log_prior(counts, x.dtype).to(x.device)
        weight, bias = self._train(x, labels, prior, chosen["weight_decay"], chosen["epochs"],
                                   chosen["tau"] if self.tau_in_loss else None)
        self.feature_mean, self.feature_std, self.weight, self.bias, self.log_prior = mean, std, weight, bias, prior
        self.chosen = chosen
        return self

    def scores(self, query: Tensor) -> Tensor:
        """query: [q, d] features (or images) -> [q, C] scores."""
        if self.weight is None:
            raise RuntimeError(f"call fit(support, support_labels) before scores(query) on {type(self).__name__}")
        with torch.no_grad():
            x = self.embed(query)
        if x.shape[1:] != self.feature_mean.shape:
            raise ValueError(f"query features have d={x.shape[1]}, the support had d={self.feature_mean.shape[0]}")
        x = (x.to(self.feature_mean) - self.feature_mean) / self.feature_std
        tau = None if self.taus is None or self.tau_in_loss else self.chosen["tau"]
        return self._post_hoc(x @ self.weight.T, self.weight, self.bias, self.log_prior, tau)


def _check_labels(feats: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(int64 labels on the features' device, per-class counts [C]), or one clear ValueError."""
    if labels.is_floating_point() or labels.shape != feats.shape[:1] or not len(labels) or int(labels.min()) < 0:
        raise ValueError(f"support_labels must be [n] integers >= 0 matching support [n, d], n >= 1; got "
                         f"{tuple(labels.shape)} ({labels.dtype}) for support {tuple(feats.shape)}")
    labels = labels.to(feats.device, torch.long)
    counts = torch.bincount(labels)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {empty[:10]} have no support item; every class needs at least one")
    return labels, counts
