"""The plots of a run's uncertainty: each transfer figure with its interval, and each group's
critical-difference diagram.

- ``intervals.png``: per group, every method's macro top-1 with its 95% bootstrap interval (bars), and the
  macro top-1 of each seed it ran with (dots), best first;
- ``cd_<group>.png``: the Friedman / Nemenyi critical-difference diagram of the group's per-class top-1
  (:func:`fewshot.evaluation.draw_cd_diagram`).

Drawers take the pyplot module, the run's summary and per-class table, like those of
:mod:`benchmarks.reports.plots`, and return a figure (or {name: figure}), None when there is nothing to draw.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fewshot.evaluation import RankingResult, draw_cd_diagram

GROUPS = ("head", "tail", "all")
_TITLES = {"head": "head classes", "tail": "tail classes", "all": "all classes, one joint classifier"}


def intervals(plt, summary: dict, per_class: pd.DataFrame, title: str):
    transfer = summary.get("transfer") or {}
    groups = [g for g in GROUPS if any(r.get("ci") for r in (transfer.get(g) or {}).values())]
    if not groups:
        return None
    n = max(len(transfer[g]) for g in groups)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 1.4 + 0.32 * n), squeeze=False,
                             layout="constrained")
    for ax, group in zip(axes[0], groups):
        rows = sorted(transfer[group].items(), key=lambda kv: kv[1]["macro_top1"])  # best at the top
        y = np.arange(len(rows))
        point = np.array([100 * r["macro_top1"] for _, r in rows])
        ci = np.array([[100 * v for v in r["ci"]["macro_top1"]] for _, r in rows])
        # the interval as a segment, not errorbar's offsets: a percentile interval need not hold its point (a
        # skewed bootstrap, or rounding when every resample agrees), and negative offsets make errorbar raise
        ax.hlines(y, ci[:, 0], ci[:, 1], color="C0", linewidth=1.5, label="95% bootstrap interval")
        ax.scatter(point, y, color="C0", s=22, zorder=3, label="seed's figure")
        for i, (_, r) in enumerate(rows):
            seeds = list((r.get("seeds") or {}).get("macro_top1", {}).values())
            if len(seeds) > 1:
                ax.scatter([100 * v for v in seeds], [i] * len(seeds), s=12, color="C1", zorder=3,
                           label="each seed" if i == next(j for j, (_, q) in enumerate(rows)
                                                           if len((q.get("seeds") or {}).get("macro_top1", {})) > 1)
                           else None)
        ax.set_yticks(y, [m for m, _ in rows], fontsize=8)
        ax.set_xlabel("macro top-1 (%)")
        ax.set_title(_TITLES[group], fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title}: macro top-1 with 95% intervals (class-stratified bootstrap of the test images)",
                 fontsize=10)
    return fig


def cd_diagrams(plt, summary: dict, per_class: pd.DataFrame, title: str) -> dict[str, object]:
    """{"cd_<group>.png": figure} of every group with a ranking."""
    out = {}
    for group, st in (summary.get("statistics") or {}).items():
        if st.get("ranking"):
            result = RankingResult.from_dict(st["ranking"])
            out[f"cd_{group}.png"] = draw_cd_diagram(None, result, f"{title}, {_TITLES[group]}: average rank of "
                                                                   f"per-class top-1 (CD {result.critical_difference:.2f})")
    return out
