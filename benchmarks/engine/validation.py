"""The run's validation rule on its data: which rule applies and every image's validation group."""
from __future__ import annotations

import numpy as np

from benchmarks.config import BenchmarkConfig
from fewshot.data.catalog import Catalog
from fewshot.data.protocols import TransferProtocol
from fewshot.data.validation import ValidationRule


def validation_groups(cfg: BenchmarkConfig, ds: Catalog, tp: TransferProtocol | None,
                      copies: np.ndarray | None) -> tuple[ValidationRule, np.ndarray | None]:
    """(the rule that applies: ``cfg.validation``'s, or its stratified fallback; every image's group merged with
    its pixel copies ``copies``, or None for a stratified rule). The fallback is decided on the transfer
    protocol's train images (every image without one)."""
    rule = ValidationRule(cfg.validation.rule, cfg.validation.group_key)
    train = np.concatenate([tp.head_train, tp.tail_train]) if tp is not None else None
    return rule.row_groups(ds.labels, ds.table, linked=copies, indices=train)
