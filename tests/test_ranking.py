"""Friedman + Nemenyi over per-class accuracies, average ranks, the critical difference and its diagram."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("scikit_posthocs", reason="needs the optional 'stats' extra")
from scipy.stats import rankdata  # noqa: E402  (scikit-posthocs brings scipy)

from fewshot.evaluation.ranking import (  # noqa: E402
    average_ranks,
    critical_difference,
    draw_cd_diagram,
    friedman_nemenyi,
)


def _table(seed: int, n: int = 40, k: int = 5, spread: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.linspace(0.7, 0.5, k) + rng.normal(0, spread, (n, k)), 0, 1)


@pytest.mark.parametrize("best", [0, 2, 4])
def test_a_method_best_on_every_class_ranks_first_with_a_small_p(best: int) -> None:
    table = _table(0)
    table[:, best] = table.max(axis=1) + 0.05
    result = friedman_nemenyi(table)
    assert result.p_value < 1e-6 and result.rejects
    assert result.average_ranks[best] == 1.0


@pytest.mark.parametrize("k", [3, 6])
def test_identical_methods_tie_and_no_pair_is_significant(k: int) -> None:
    column = np.random.default_rng(1).random(30)
    result = friedman_nemenyi(np.repeat(column[:, None], k, axis=1), [f"m{i}" for i in range(k)])
    np.testing.assert_array_equal(result.average_ranks, np.full(k, (k + 1) / 2))
    assert result.p_value == 1.0 and not result.rejects
    assert not any(result.significant(f"m{i}", f"m{j}") for i in range(k) for j in range(i))
    assert result.groups == (tuple(f"m{i}" for i in range(k)),)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_ranks_match_ranking_each_row_by_hand(seed: int) -> None:
    table = np.round(_table(seed, n=25, k=6), 1)  # rounding makes ties
    by_hand = np.mean([rankdata([-v for v in row], method="average") for row in table], axis=0)
    np.testing.assert_allclose(average_ranks(table), by_hand)
    np.testing.assert_allclose(friedman_nemenyi(table).average_ranks, by_hand)


@pytest.mark.parametrize("k, q_alpha", [(2, 1.960), (3, 2.343), (4, 2.569), (10, 3.164)])
def test_critical_difference_matches_demsar_table(k: int, q_alpha: float) -> None:
    n = 50
    assert critical_difference(k, n) == pytest.approx(q_alpha * np.sqrt(k * (k + 1) / (6 * n)), abs=1e-3)


@pytest.mark.parametrize("seed", [0, 3])
def test_groups_join_exactly_the_pairs_closer_than_the_critical_difference(seed: int) -> None:
    result = friedman_nemenyi(_table(seed, n=60, k=6, spread=0.15))
    assert result.rejects
    ranks = dict(zip(result.methods, result.average_ranks))
    together = {frozenset((a, b)) for g in result.groups for a in g for b in g if a != b}
    for i, a in enumerate(result.methods):
        for b in result.methods[:i]:
            close = abs(ranks[a] - ranks[b]) < result.critical_difference
            assert close == (frozenset((a, b)) in together) == (not result.significant(a, b))


def test_classes_with_nan_are_dropped_and_counted() -> None:
    table = pd.DataFrame(_table(0, n=10, k=3), columns=["centroid", "fusion", "crt"])
    table.iloc[[2, 5], 1] = np.nan
    result = friedman_nemenyi(table)
    assert result.n_classes == 8 and result.n_dropped == 2 and result.methods == ("centroid", "fusion", "crt")
    np.testing.assert_allclose(result.average_ranks, friedman_nemenyi(table.dropna()).average_ranks)


@pytest.mark.parametrize("table, methods, match", [
    (np.ones((5, 2)), None, ">= 3 methods"),
    (np.ones((1, 4)), None, ">= 2 classes"),
    (np.full((5, 3), np.nan), None, "3 dropped|5 dropped"),
    (np.ones((5, 3)), ["a", "b"], "n_methods"),
    (np.ones((5, 3)), ["a", "a", "b"], "distinct"),
])
def test_not_enough_data_raises_one_clear_value_error(table, methods, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        friedman_nemenyi(table, methods)


@pytest.mark.parametrize("k", [4, 16])
def test_cd_diagram_draws_a_figure(k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = friedman_nemenyi(_table(0, n=50, k=k), [f"method_with_a_long_name_{i}" for i in range(k)])
    fig = draw_cd_diagram(None, result, "top-1 per class")
    try:
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert sum("method_with_a_long_name_" in t for t in texts) == k
        assert any(t.startswith("CD = ") for t in texts)
    finally:
        plt.close(fig)
    fig, ax = plt.subplots()
    assert draw_cd_diagram(ax, result) is fig
    plt.close(fig)
