"""The result of a per-class top-k evaluation: the class table plus its macro and micro averages."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fewshot.evaluation.buckets import bucket_means
from fewshot.utils.records import record


@record
@dataclass(frozen=True)
class TopKResult:
    """Per-class table and averages of top-k accuracy.

    table: one row per class: ``class`` (index), ``name``, ``n`` (test items), then ``top{k}`` per k
        (NaN when n == 0).
    macro: ``{"top1": ...}`` mean over the classes that have test items.
    micro: ``{"top1": ...}`` over all items.
    k_used: ``{"top5": 3}``: the k actually applied (min(k, C)); ``truncated`` says where it was cut.
    """

    table: pd.DataFrame
    macro: dict[str, float]
    micro: dict[str, float]
    k_used: dict[str, int]

    @property
    def truncated(self) -> dict[str, bool]:
        return {col: k != int(col[3:]) for col, k in self.k_used.items()}

    def summary(self) -> dict[str, float]:
        """Flat ``{"macro_top1", ..., "micro_top5"}`` for result files."""
        out = {f"macro_{col}": v for col, v in self.macro.items()}
        out.update({f"micro_{col}": v for col, v in self.micro.items()})
        return out

    def buckets(self, n_train: Sequence[int] | np.ndarray, column: str = "top1") -> dict[str, float]:
        """Many/Medium/Few mean of ``column`` given each class's number of train images."""
        return bucket_means(self.table[column].to_numpy(), n_train)

    @classmethod
    def from_counts(
        cls, counts: torch.Tensor, hits: torch.Tensor, ks: Sequence[int], class_names: Sequence[str] | None = None
    ) -> TopKResult:
        """Build from per-class counts [C] and hit counts [len(ks), C] (see ``functional.topk_counts``)."""
        n = counts.detach().cpu().numpy().astype(np.int64)
        h = hits.detach().cpu().numpy().astype(np.int64)
        n_classes = len(n)
        if class_names is None:
            class_names = [str(c) for c in range(n_classes)]
        elif len(class_names) != n_classes:
            raise ValueError(f"got {len(class_names)} class_names for {n_classes} classes (score columns)")
        columns = [f"top{k}" for k in ks]
        table = pd.DataFrame({"class": np.arange(n_classes), "name": list(class_names), "n": n})
        with np.errstate(invalid="ignore", divide="ignore"):
            for col, row in zip(columns, h):
                table[col] = np.where(n > 0, row / np.maximum(n, 1), np.nan)
        total = int(n.sum())
        has_items = n > 0
        macro = {c: float(table[c].to_numpy()[has_items].mean()) if has_items.any() else float("nan") for c in columns}
        micro = {c: float(row.sum() / total) if total else float("nan") for c, row in zip(columns, h)}
        return cls(table=table, macro=macro, micro=micro, k_used={c: min(k, n_classes) for c, k in zip(columns, ks)})
