"""Late fusion of an image classifier and a text (product-name) classifier.

The seed's proposed extension: a branch on ``productDisplayName`` for when the image model is unsure.
Two rules, on the same calibrated branches, each able to lean either way:
- ``gate``: one branch's prediction unless its top probability is below a threshold, then the other's; which
  branch comes first ("image unless unsure" or "text unless unsure") and the threshold are chosen together;
- ``product``: a weighted product of both branches' probabilities, renormalised, its weight chosen.
Each branch is calibrated by temperature scaling (Guo et al. 2017), and each rule's setting chosen, on a
validation split of the support (stratified, or whole groups held out when ``fit`` gets ``groups``); then
both branches are refitted on the whole support. A setting chosen at the edge of its grid (a weight of 0 or
1, a threshold at the grid's end) is listed in ``chosen["at_grid_edge"]``: the grid may have been too narrow,
or one branch is all the validation items want.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from fewshot.data.validation import validation_split
from fewshot.methods.base import FewShotClassifier, fit_validated
from fewshot.methods.fusion_functional import (
    DEFAULT_THRESHOLDS,
    DEFAULT_WEIGHTS,
    choose_threshold,
    choose_weight,
    fit_temperature,
    gate_fusion,
    macro_top1,
    nll,
    product_fusion,
)
from fewshot.methods.text_head import TextHead, abstains

Rule = Literal["gate", "product"]
RULES: tuple[str, ...] = ("gate", "product")


class LateFusion(FewShotClassifier):
    """Inputs are concatenated features [n, image_dim + d_text]: image features first, then text
    features (an all-zero text row = no name: the text branch abstains, and both rules return the
    image's prediction). ``scores`` returns fused log-probabilities [q, C] by ``rule``; ``fused`` both.

    ``chosen`` after ``fit``: the two temperatures, the gate's primary branch and threshold, the product's
    image weight, validation macro top-1 / NLL of each branch and rule, and ``at_grid_edge`` (T = 1, the image
    as primary with threshold 0 and weight 0.5, the plain product, when the support is too small to hold out
    a validation split).
    """

    uses_validation: ClassVar[bool] = True

    def __init__(self, image_head: FewShotClassifier, text_head: FewShotClassifier, image_dim: int, *,
                 rule: Rule = "product", val_fraction: float = 0.2, seed: int = 0,
                 thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
                 weights: tuple[float, ...] = DEFAULT_WEIGHTS) -> None:
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown fusion rule {rule!r}; known: {', '.join(RULES)}")
        if image_dim < 1 or not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"image_dim={image_dim} must be >= 1 and val_fraction={val_fraction} in [0, 1)")
        self.image_head = image_head
        self.text_head = text_head if isinstance(text_head, TextHead) else TextHead(text_head)
        self.image_dim, self.rule, self.val_fraction, self.seed = int(image_dim), rule, float(val_fraction), int(seed)
        self.thresholds, self.weights = tuple(thresholds), tuple(weights)
        if not self.thresholds or not self.weights or not 0 <= min(self.weights) <= max(self.weights) <= 1:
            raise ValueError(f"thresholds {self.thresholds} and weights {self.weights} (in [0, 1]) must not be empty")
        self.temperatures = (1.0, 1.0)
        self.primary, self.threshold, self.image_weight = "image", 0.0, 0.5
        self.chosen: dict[str, Any] = {}

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 2 or x.shape[1] <= self.image_dim:
            raise ValueError(f"expected [n, image_dim + d_text] features with image_dim={self.image_dim}, "
                             f"got shape {tuple(x.shape)}")
        return x[:, : self.image_dim], x[:, self.image_dim:]

    def _log_probs(self, image_head: FewShotClassifier, text_head: FewShotClassifier, x: Tensor,
                   temperatures: tuple[float, float]) -> tuple[Tensor, Tensor, Tensor]:
        image, text = self._split(x)
        image_logp = torch.log_softmax(image_head.scores(image).double() / temperatures[0], dim=1)
        text_logp = torch.log_softmax(text_head.scores(text).double() / temperatures[1], dim=1)
        return image_logp, text_logp, abstains(text)

    def fit(self, support: Tensor, support_labels: Tensor, groups: np.ndarray | None = None) -> LateFusion:
        """support: [n, image_dim + d_text]; support_labels: [n] in 0..C-1; groups: optional int [n] (see
        :class:`FewShotClassifier`), also passed on to branches that choose settings on validation."""
        labels = torch.as_tensor(support_labels).long()
        self._n_classes(labels)
        groups = None if groups is None else np.asarray(groups)
        train, val = (torch.from_numpy(a) for a in validation_split(labels.numpy(), self.val_fraction, self.seed,
                                                                    groups=groups))
        self.temperatures, self.primary, self.threshold, self.image_weight = (1.0, 1.0), "image", 0.0, 0.5
        self.chosen = {"val_items": len(val)}
        if len(val):
            self._calibrate(support, labels, train, val, groups)
        image, text = self._split(support)
        fit_validated(self.image_head, image, labels, groups)
        fit_validated(self.text_head, text, labels, groups)
        return self

    def _calibrate(self, support: Tensor, labels: Tensor, train: Tensor, val: Tensor,
                   groups: np.ndarray | None) -> None:
        """Temperatures, the gate and the product's weight from branches fitted on ``train``, scored on ``val``."""
        image_head, text_head = copy.deepcopy(self.image_head), copy.deepcopy(self.text_head)
        image, text = self._split(support[train])
        inner = None if groups is None else groups[train.numpy()]
        fit_validated(image_head, image, labels[train], inner)
        fit_validated(text_head, text, labels[train], inner)
        raw_image, raw_text, silent = self._log_probs(image_head, text_head, support[val], (1.0, 1.0))
        y = labels[val]
        t_image = fit_temperature(raw_image, y)
        t_text = fit_temperature(raw_text[~silent], y[~silent]) if (~silent).any() else 1.0
        image_logp, text_logp = torch.log_softmax(raw_image / t_image, 1), torch.log_softmax(raw_text / t_text, 1)
        self.temperatures = (t_image, t_text)
        self.primary, self.threshold, gate_val = choose_threshold(image_logp, text_logp, y, silent, self.thresholds)
        self.image_weight, product_val = choose_weight(image_logp, text_logp, y, silent, self.weights)
        edges = [name for name, value, grid in (("threshold", self.threshold, self.thresholds),
                                                ("image_weight", self.image_weight, self.weights))
                 if len(grid) > 1 and value in (min(grid), max(grid))]
        self.chosen.update({
            "image_temperature": t_image, "text_temperature": t_text, "gate_primary": self.primary,
            "threshold": self.threshold, "image_weight": self.image_weight, "at_grid_edge": edges,
            "val_nll": {"image": nll(raw_image, y), "image_scaled": nll(raw_image, y, t_image),
                        "text": nll(raw_text, y), "text_scaled": nll(raw_text, y, t_text)},
            "val_macro_top1": {"image": macro_top1(image_logp, y), "text": macro_top1(text_logp, y), "gate": gate_val,
                               "product": product_val}})

    def fused(self, query: Tensor) -> dict[str, Tensor]:
        """{"image", "text", "gate", "product"}: [q, C] log-probabilities of each branch and each rule."""
        image_logp, text_logp, silent = self._log_probs(self.image_head, self.text_head, query, self.temperatures)
        return {"image": image_logp, "text": text_logp,
                "gate": gate_fusion(image_logp, text_logp, self.threshold, silent, self.primary),
                "product": product_fusion(image_logp, text_logp, self.image_weight, silent)}

    def scores(self, query: Tensor) -> Tensor:
        """query: [q, image_dim + d_text] -> [q, C] fused log-probabilities of ``rule``."""
        return self.fused(query)[self.rule]
