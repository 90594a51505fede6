"""Test images whose product name lacks their class word: the text branch's hard part, scored for every
method of the transfer protocol."""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.engine.context import RunContext
from fewshot.data.protocols import TransferProtocol
from fewshot.evaluation import per_class_topk
from fewshot.text import mentions_own_class


def without_class_word(ctx: RunContext, protocol: TransferProtocol, group: str) -> np.ndarray:
    """bool [n_test of ``group``]: test images whose name does not contain their class name."""
    rows = getattr(protocol, f"{group}_test")
    names = np.asarray(ctx.names, dtype=object)[rows].tolist()
    return ~mentions_own_class(names, protocol.articles[rows].tolist())


def subset_row(scores: torch.Tensor, targets: torch.Tensor, mask: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Macro/micro top-1/top-5 of ``scores`` [n, C] on the items of ``mask`` (macro over the classes
    that have such items), and how many items that is."""
    if not mask.any():
        return {"n": 0}
    keep = torch.from_numpy(mask)
    result = per_class_topk(scores[keep], targets[keep], class_names=class_names)
    return {"n": int(mask.sum()), **result.summary()}


def subset_summary(transfer: dict, ctx: RunContext, protocol: TransferProtocol) -> dict:
    """summary.json's ``name_subsets``: per group, the share of test names that contain their class name,
    and each method's figures on the test images whose names do not."""
    out: dict = {}
    for group in ("head", "tail", "all"):
        rows = getattr(protocol, f"{group}_test")
        if not len(rows) or not any(group in by_group for by_group in transfer.get("subsets", {}).values()):
            continue
        mask = without_class_word(ctx, protocol, group)
        out[group] = {"n_test": len(rows), "n_without_class_word": int(mask.sum()),
                      "share_with_class_word": float(1 - mask.mean()),
                      "methods": {m: by_group[group] for m, by_group in transfer["subsets"].items()
                                  if group in by_group}}
    return out
