"""Class-balanced logistic regression on standardised features (scikit-learn's ``LogisticRegression`` with
``class_weight="balanced"``): every class weighs the same in the loss, whatever its number of items, the
text baseline of issue 27 (standardised bag-of-words names: 0.838 tail macro top-1 on the Kaggle test
years).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fewshot.methods.base import FewShotClassifier

SPARSE_BELOW = 0.1  # share of non-zero entries under which the solver gets a sparse matrix (same optimum)


class BalancedLogReg(FewShotClassifier):
    """Multinomial logistic regression, L2-penalised (``C``), class-balanced weights ``n / (C_classes * n_c)``,
    by scikit-learn's lbfgs solver, on features standardised with the support's mean and std (a feature
    constant on the support keeps scale 1). Scores are the logits [q, C]. No setting is chosen on validation.

    The intercept is not penalised, so centring the features moves only the intercept: on a sparse support
    (bag-of-words names, under ``SPARSE_BELOW`` non-zeros) the solver gets the scaled, uncentred features as
    a sparse matrix, many times faster, and the intercept is shifted back; the logits are those of the
    centred problem (up to the solver's tolerance). Buffers: ``feature_mean``, ``feature_std`` [d],
    ``weight`` [C, d], ``bias`` [C] (logits = ((x - mean) / std) @ weight.T + bias).

    Args:
        C: inverse regularisation strength (scikit-learn's). max_iter, tol: the solver's.
    """

    def __init__(self, backbone: nn.Module | None = None, preprocess: Callable[[Tensor], Tensor] | None = None, *,
                 C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4) -> None:
        super().__init__(backbone, preprocess)
        if not C > 0 or max_iter < 1 or not tol > 0:
            raise ValueError(f"C={C} and tol={tol} must be > 0, max_iter={max_iter} >= 1")
        self.C, self.max_iter, self.tol = float(C), int(max_iter), float(tol)
        self.n_iter: int | None = None
        for name in ("feature_mean", "feature_std", "weight", "bias"):
            self.register_buffer(name, None)

    def fit(self, support: Tensor, support_labels: Tensor) -> BalancedLogReg:
        """support: [n, d] features (or images through ``backbone``); support_labels: [n] in 0..C-1, every
        class present (at least two classes)."""
        from sklearn.linear_model import LogisticRegression

        with torch.no_grad():
            feats = self.embed(support).detach().float().cpu()
        labels = torch.as_tensor(support_labels)
        n_classes = self._n_classes(labels)
        if labels.shape != feats.shape[:1] or labels.is_floating_point() or int(labels.min()) < 0:
            raise ValueError(f"support_labels must be [n] integers >= 0 matching support {tuple(feats.shape)}, got "
                             f"{tuple(labels.shape)} ({labels.dtype})")
        counts = torch.bincount(labels.long(), minlength=n_classes)
        if (counts == 0).any() or n_classes < 2:
            raise ValueError(f"every class 0..{n_classes - 1} needs a support item, and there must be two classes; "
                             f"counts {counts.tolist()[:10]}")
        x = feats.double().numpy()
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 1e-6, std, 1.0)
        sparse = np.count_nonzero(x) < SPARSE_BELOW * x.size
        if sparse:
            from scipy.sparse import csr_matrix

            design: Any = csr_matrix(x / std)
        else:
            design = (x - mean) / std
        clf = LogisticRegression(C=self.C, class_weight="balanced", max_iter=self.max_iter, tol=self.tol)
        clf.fit(design, labels.numpy())
        coef, intercept = clf.coef_, clf.intercept_
        if n_classes == 2:  # scikit-learn keeps one row for two classes: logits [0, z] give the same softmax
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        if sparse:  # w . x / s + b == w . (x - m) / s + (b + w . m / s)
            intercept = intercept + coef @ (mean / std)
        self.n_iter = int(np.max(clf.n_iter_))
        self.feature_mean, self.feature_std = torch.from_numpy(mean).float(), torch.from_numpy(std).float()
        self.weight, self.bias = torch.from_numpy(coef).float(), torch.from_numpy(intercept).float()
        return self

    def scores(self, query: Tensor) -> Tensor:
        """query: [q, d] features (or images) -> [q, C] logits."""
        if self.weight is None:
            raise RuntimeError("call fit(support, support_labels) before scores(query) on BalancedLogReg")
        with torch.no_grad():
            x = self.embed(query).float()
        if x.shape[1:] != self.feature_mean.shape:
            raise ValueError(f"query features have d={x.shape[1]}, the support had d={self.feature_mean.shape[0]}")
        x = (x.to(self.feature_mean.device) - self.feature_mean) / self.feature_std
        return x @ self.weight.T + self.bias
