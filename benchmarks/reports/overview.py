"""Two at-a-glance plots of the transfer protocol: a per-class heatmap and Many / Medium / Few bars.

The per-class scatter (``per_class_vs_train.png``) overplots a dozen methods into one cloud; these two
read without a legend hunt:

- ``per_class_heatmap.png``: one panel per group (head, tail, joint ``all``); rows are the group's test
  classes sorted by train images (most first, the count in the row label), columns the methods that
  report that group, each cell the class's top-1 in percent.
- ``buckets.png``: per group, each method's macro top-1 on its Many (> 100 train images), Medium (20-100)
  and Few (< 20) classes side by side (``summary.json``'s ``buckets``).

Both take the pyplot module, the run's summary and per-class table, like the drawers of
:mod:`benchmarks.reports.plots`, and return a figure, or None when the run has no transfer results.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fewshot.evaluation import BUCKETS

GROUPS = ("head", "tail", "all")
_GROUP_TITLES = {"head": "head classes", "tail": "tail classes", "all": "all classes, one joint classifier"}
_BUCKET_COLORS = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}


def _methods(per_class: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The methods (``<m>/top1`` columns) with a figure for at least one of ``rows``, in column order."""
    return [c[:-5] for c in per_class.columns if c.endswith("/top1") and rows[c].notna().any()]


def heatmap(plt, summary: dict, per_class: pd.DataFrame, title: str):
    panels = {}
    for group in GROUPS:
        rows = per_class[(per_class["group"] == group) & (per_class["n_test"] > 0)]
        rows = rows.sort_values(["n_train", "class"], ascending=[False, True], kind="stable")
        methods = _methods(per_class, rows)
        if len(rows) and methods:
            panels[group] = (rows, methods)
    if not panels:
        return None
    # head over tail on the left, the joint group on the right: the two columns then hold about as many
    # rows each (head + tail = all), so every row gets the same height
    left = [g for g in ("head", "tail") if g in panels] or ["all"]
    right = ["all"] if "all" in panels and left != ["all"] else []
    n_left = sum(len(panels[g][0]) for g in left)
    n_rows = max(n_left, len(panels["all"][0]) if right else 0)
    n_cols = [max(len(panels[g][1]) for g in left)] + ([len(panels["all"][1])] if right else [])
    fig = plt.figure(figsize=(3.2 * len(n_cols) + 0.42 * sum(n_cols), 2.2 + 0.16 * n_rows))
    grid = fig.add_gridspec(2 if len(left) == 2 else 1, len(n_cols), width_ratios=n_cols, wspace=0.55,
                            hspace=0.06, top=0.9, height_ratios=[len(panels[g][0]) for g in left] if len(left) == 2 else None)
    axes = [fig.add_subplot(grid[i, 0]) for i in range(len(left))] + ([fig.add_subplot(grid[:, 1])] if right else [])
    image = None
    for ax, group in zip(axes, left + right):
        rows, methods = panels[group]
        values = 100 * rows[[f"{m}/top1" for m in methods]].to_numpy(float)  # [classes, methods], NaN = none
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto",
                          interpolation="nearest")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):  # dark text on the bright (high) end of viridis, light on the dark end
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=5.5,
                        color="black" if v >= 60 else "white")
        if ax is axes[0] and len(left) == 2:  # the head panel's method names go on top, clear of the tail's title
            ax.xaxis.tick_top()
            ax.set_xticks(np.arange(len(methods)), methods, rotation=60, ha="left", fontsize=7)
        else:
            ax.set_xticks(np.arange(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        labels = [f"{c} ({int(n)})" for c, n in zip(rows["class"], rows["n_train"])]
        ax.set_yticks(np.arange(len(rows)), labels, fontsize=6)
        ax.set_ylabel(f"{_GROUP_TITLES[group]} ({len(rows)})", fontsize=9)
        ax.tick_params(length=0)
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01, label="per-class top-1 (%)")
    fig.suptitle(f"{title}: per-class top-1 on test images; rows sorted by train images (in brackets)",
                 fontsize=10)
    return fig


def _bucket(row: dict, bucket: str) -> float | None:
    """A method's macro top-1 on one bucket; None when the group has no class in it."""
    return (row.get("buckets") or {}).get(bucket)


def buckets(plt, summary: dict, per_class: pd.DataFrame, title: str):
    transfer = summary.get("transfer") or {}
    groups = [g for g in GROUPS if transfer.get(g)]
    if not groups:
        return None
    n_methods = max(len(transfer[g]) for g in groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(7.0, 0.75 * n_methods), 3.2 * len(groups)),
                             squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        methods = list(transfer[group])
        present = [b for b in BUCKETS if any(_bucket(transfer[group][m], b) is not None for m in methods)]
        x = np.arange(len(methods))
        width = 0.8 / max(len(present), 1)
        for k, bucket in enumerate(present):
            values = [_bucket(transfer[group][m], bucket) for m in methods]
            heights = [np.nan if v is None else 100 * v for v in values]
            ax.bar(x + (k - (len(present) - 1) / 2) * width, heights, width, label=bucket.capitalize(),
                   color=_BUCKET_COLORS.get(bucket))
        ax.set_xticks(x, methods, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("macro top-1 (%)")
        ax.set_title(_GROUP_TITLES[group], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{title}: macro top-1 by train images per class "
                 "(Many > 100, Medium 20-100, Few < 20)", fontsize=10)
    fig.tight_layout()
    return fig
