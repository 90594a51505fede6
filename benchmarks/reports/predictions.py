"""``predictions.npz``: every transfer method's top-5 classes for every test image of every group, written by
the run, so that each figure of summary.json (and each interval, test and plot made from them) can be
recomputed from the run folder alone.

Layout (NumPy ``.npz``, compressed, no pickles): per group ``G`` (head, tail, all), ``G/rows`` int64 [n] the
test images' dataset ids, ``G/targets`` int16 [n] their classes (indices into ``G/classes`` [C], text),
``G/n_train`` int64 [C] train images per class; per method ``M`` of the group, ``G/M/top`` int16 [n, K] the K
best classes (the evaluator's order: :func:`fewshot.evaluation.predictions.top_predictions`) and
``G/M/scores`` float16 [n, K] their scores (for reading only). The main seed's predictions.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fewshot.data.protocols import TRANSFER_GROUPS, TransferProtocol
from fewshot.evaluation import TopKResult
from fewshot.evaluation.predictions import per_class_topk_from_top
from fewshot.utils.io import atomic_open

FILE = "predictions.npz"


@dataclass(frozen=True)
class GroupPredictions:
    """One group's test images and each method's kept top classes (see the module docstring)."""

    rows: np.ndarray
    targets: np.ndarray
    classes: tuple[str, ...]
    n_train: np.ndarray
    top: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]

    def result(self, method: str) -> TopKResult:
        """The method's per-class top-1 / top-5, recomputed from its kept classes."""
        return per_class_topk_from_top(self.top[method], self.targets.astype(np.int64), len(self.classes),
                                       class_names=self.classes)


def collect(transfer: dict, protocol: TransferProtocol, ids: np.ndarray) -> dict[str, GroupPredictions]:
    """The run's predictions, group by group, from :func:`benchmarks.protocols.transfer.run_transfer`'s
    results (``ids``: the dataset id of every row)."""
    out = {}
    for group in TRANSFER_GROUPS:
        methods = [m for m in transfer.get(group, {}) if group in transfer.get("predictions", {}).get(m, {})]
        if not methods:
            continue
        rows = getattr(protocol, f"{group}_test")
        classes = protocol.classes(group)
        records = {m: transfer["predictions"][m][group] for m in methods}
        out[group] = GroupPredictions(
            rows=np.asarray(ids)[rows].astype(np.int64), targets=protocol.targets(rows, group).astype(np.int16),
            classes=tuple(classes), n_train=protocol.counts.loc[list(classes), "n_train"].to_numpy(np.int64),
            top={m: r["top"] for m, r in records.items()}, scores={m: r["scores"] for m, r in records.items()})
    return out


def write(path: Path, groups: dict[str, GroupPredictions]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for group, g in groups.items():
        arrays.update({f"{group}/rows": g.rows, f"{group}/targets": g.targets, f"{group}/n_train": g.n_train,
                       f"{group}/classes": np.asarray(g.classes, dtype=str)})
        for method in g.top:
            arrays[f"{group}/{method}/top"] = g.top[method]
            arrays[f"{group}/{method}/scores"] = g.scores[method]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_open(path, "wb") as fh:
        fh.write(buffer.getvalue())


def read(path: Path) -> dict[str, GroupPredictions]:
    """The groups of a ``predictions.npz`` (methods in the order they were written)."""
    with np.load(path, allow_pickle=False) as data:
        keys = list(data.keys())
        out = {}
        for group in TRANSFER_GROUPS:
            if f"{group}/rows" not in keys:
                continue
            methods = [k[len(group) + 1:-len("/top")] for k in keys if k.startswith(f"{group}/") and k.endswith("/top")]
            out[group] = GroupPredictions(
                rows=data[f"{group}/rows"], targets=data[f"{group}/targets"],
                classes=tuple(str(c) for c in data[f"{group}/classes"]), n_train=data[f"{group}/n_train"],
                top={m: data[f"{group}/{m}/top"] for m in methods}, scores={m: data[f"{group}/{m}/scores"] for m in methods})
    return out
