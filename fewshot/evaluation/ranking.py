"""Do methods differ across classes? Friedman's test on per-class accuracies, Nemenyi's post-hoc test and
the critical-difference diagram (Demšar 2006, "Statistical Comparisons of Classifiers over Multiple Data
Sets", JMLR 7:1-30), with the classes of the catalogue in the role of Demšar's data sets.

Nemenyi is the post-hoc test here because its verdict is a single critical difference of average ranks:
two methods differ iff their ranks lie more than CD apart, which is exactly what a CD diagram draws, so
the bars a reader sees and the p-values in the table cannot disagree. (Wilcoxon + Holm is more powerful
but its verdicts are not a function of the ranks and need not form the intervals a diagram can draw.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported lazily: plotting is optional
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class RankingResult:
    """Friedman + Nemenyi over n_classes rows (classes) and k methods.

    average_ranks [k]: mean rank per method over the classes, 1 = best, ties averaged.
    pairwise_p [k, k]: Nemenyi p-values (1 on the diagonal).
    critical_difference: the smallest difference of average ranks Nemenyi calls significant at ``alpha``.
    groups: the bars of a CD diagram: maximal runs of methods (best first) with no significant pair; when
        Friedman does not reject, one group of all methods (Demšar's protocol runs the post-hoc test only
        after the omnibus test rejects). n_dropped: classes left out because some method had NaN there.
    """

    methods: tuple[str, ...]
    statistic: float
    p_value: float
    n_classes: int
    n_dropped: int
    average_ranks: np.ndarray
    pairwise_p: np.ndarray
    alpha: float
    critical_difference: float
    groups: tuple[tuple[str, ...], ...]

    @property
    def rejects(self) -> bool:
        """Friedman rejects "all methods rank alike" at ``alpha``."""
        return bool(self.p_value < self.alpha)

    def significant(self, a: str, b: str) -> bool:
        """Whether methods a and b differ (Friedman rejects and Nemenyi's p < alpha)."""
        i, j = self.methods.index(a), self.methods.index(b)
        return self.rejects and bool(self.pairwise_p[i, j] < self.alpha)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankingResult:
        """The inverse of :meth:`to_dict` (a result file's ranking, e.g. to draw its diagram again)."""
        return cls(**{**data, "methods": tuple(data["methods"]), "average_ranks": np.asarray(data["average_ranks"]),
                      "pairwise_p": np.asarray(data["pairwise_p"]), "groups": tuple(tuple(g) for g in data["groups"])})

    def to_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "statistic": self.statistic, "p_value": self.p_value,
                "n_classes": self.n_classes, "n_dropped": self.n_dropped,
                "average_ranks": self.average_ranks.tolist(), "pairwise_p": self.pairwise_p.tolist(),
                "alpha": self.alpha, "critical_difference": self.critical_difference,
                "groups": [list(g) for g in self.groups]}


def average_ranks(table: np.ndarray) -> np.ndarray:
    """Mean over rows of each column's rank within its row, [n, k] -> [k]; rank 1 = highest value, ties
    share the average of their ranks (Demšar 2006, section 3.2.2)."""
    from scipy.stats import rankdata

    return rankdata(-np.asarray(table, dtype=np.float64), axis=1, method="average").mean(axis=0)


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's CD = q_alpha * sqrt(k (k + 1) / (6 n)) for k methods over n classes, q_alpha the studentized
    range quantile over sqrt(2) (Demšar 2006, eq. in section 3.2.2 and table 5: q_0.05 = 2.569 for k = 4)."""
    from scipy.stats import studentized_range

    q_alpha = float(studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    return q_alpha * math.sqrt(k * (k + 1) / (6.0 * n))


def _groups(order: np.ndarray, pairwise_p: np.ndarray, alpha: float) -> list[tuple[int, ...]]:
    """Maximal runs order[i..j] (methods sorted by rank) with no pair below ``alpha``, two methods or more."""
    runs: list[tuple[int, int]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and (pairwise_p[order[j + 1], order[i:j + 1]] >= alpha).all():
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return [tuple(order[a:b + 1].tolist()) for a, b in runs]


def friedman_nemenyi(table: np.ndarray | pd.DataFrame, methods: Sequence[str] | None = None, *,
                     alpha: float = 0.05) -> RankingResult:
    """Friedman's test and Nemenyi's post-hoc test on per-class scores [n_classes, k] (higher = better).

    ``table``: a DataFrame (columns = methods) or an array with ``methods`` naming its columns. Classes
    where any method is NaN (e.g. no test items) are dropped and counted in ``n_dropped``. Needs k >= 3
    methods (scipy's Friedman; for two methods read their paired bootstrap difference) and 2 classes.
    When every class ties all methods Friedman's statistic is 0/0; it is reported as 0 with p = 1.
    """
    from scikit_posthocs import posthoc_nemenyi_friedman
    from scipy.stats import friedmanchisquare

    if methods is None:
        methods = [str(c) for c in getattr(table, "columns", range(np.shape(table)[-1]))]
    values = np.asarray(table, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(methods):
        raise ValueError(f"table must be [n_classes, n_methods] with {len(methods)} methods, got {values.shape}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"method names must be distinct, got {list(methods)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    keep = ~np.isnan(values).any(axis=1)
    values, k, n = values[keep], values.shape[1], int(keep.sum())
    if k < 3 or n < 2:
        raise ValueError(f"Friedman needs >= 3 methods and >= 2 classes with no NaN; got {k} methods and {n} "
                         f"classes ({int((~keep).sum())} dropped for NaN)")
    if (values == values[:, :1]).all():
        statistic, p_value = 0.0, 1.0  # no class orders the methods: nothing to reject
    else:
        statistic, p_value = (float(v) for v in friedmanchisquare(*values.T))
    ranks = average_ranks(values)
    pairwise = posthoc_nemenyi_friedman(values).to_numpy(dtype=np.float64)
    order = np.argsort(ranks, kind="stable")
    runs = _groups(order, pairwise, alpha) if p_value < alpha else [tuple(order.tolist())]
    return RankingResult(
        methods=tuple(methods), statistic=statistic, p_value=p_value, n_classes=n, n_dropped=int((~keep).sum()),
        average_ranks=ranks, pairwise_p=pairwise, alpha=alpha, critical_difference=critical_difference(k, n, alpha),
        groups=tuple(tuple(methods[i] for i in run) for run in runs))


def draw_cd_diagram(ax: Axes | None, result: RankingResult, title: str | None = None) -> Figure:
    """Draw a critical-difference diagram (Demšar 2006, figure 1) of ``result`` on ``ax`` (None: a new
    figure sized for the number of methods) and return the figure.

    The top line is the average-rank axis, rank 1 (best) on the left, with the CD drawn above it; each
    method hangs from its rank to its label (best half on the left); thick bars join the methods that do
    not differ significantly (``result.groups``).
    """
    import matplotlib.pyplot as plt

    k = len(result.methods)
    order = np.argsort(result.average_ranks, kind="stable")
    left = (k + 1) // 2
    spans = [(min(r), max(r)) for r in ([result.average_ranks[result.methods.index(m)] for m in g]
                                        for g in result.groups if len(g) > 1)]
    levels: list[list[tuple[float, float]]] = []  # rows of bars that do not overlap (with a small gap)
    for low, high in sorted(spans):
        for row in levels:
            if all(high + 0.1 < a or b + 0.1 < low for a, b in row):
                row.append((low, high))
                break
        else:
            levels.append([(low, high)])
    if ax is None:
        fig = plt.figure(figsize=(10, 1.4 + 0.26 * (left + len(levels))))
        ax = fig.add_axes((0.24, 0.02, 0.52, 0.8 if title is None else 0.72))
    fig = ax.figure
    step, text = 1.0, {"fontsize": 9, "va": "center"}
    ax.set_xlim(1, k)
    ax.set_ylim(-(len(levels) + left + 0.8) * step, 2.2 * step)
    ax.axis("off")
    ax.plot([1, k], [0, 0], color="k", lw=1)
    for r in range(1, k + 1):  # the rank axis
        ax.plot([r, r], [0, 0.25 * step], color="k", lw=1)
        ax.text(r, 0.55 * step, str(r), ha="center", fontsize=8, va="center")
    cd = result.critical_difference
    ax.plot([1, 1 + cd], [1.5 * step] * 2, color="k", lw=1.5, marker="|", markersize=8)
    ax.text(1 + cd / 2, 1.95 * step, f"CD = {cd:.2f}", ha="center", fontsize=8, va="center")
    for level, row in enumerate(levels):
        for low, high in row:
            y = -(level + 0.6) * step
            ax.plot([low - 0.03, high + 0.03], [y, y], color="k", lw=3, solid_capstyle="round")
    first = -(len(levels) + 0.8) * step
    for pos, i in enumerate(order):
        rank, name = float(result.average_ranks[i]), result.methods[i]
        on_left = pos < left
        y = first - (pos if on_left else k - 1 - pos) * step
        end = 1 - 0.03 * k if on_left else k + 0.03 * k
        ax.plot([rank, rank, end], [0, y, y], color="0.35", lw=0.8, clip_on=False)
        label = f"{name} ({rank:.2f})" if on_left else f"({rank:.2f}) {name}"
        ax.text(end + (-0.02 if on_left else 0.02) * k, y, label, ha="right" if on_left else "left", **text)
    if title is not None:
        dropped = f" ({result.n_dropped} with NaN left out)" if result.n_dropped else ""
        verdict = f"Friedman p = {result.p_value:.2g} over {result.n_classes} classes{dropped}"
        ax.set_title(f"{title}\n{verdict}", fontsize=10)
    return fig
