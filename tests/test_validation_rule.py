"""Group validation split: whole groups (and pixel-copy groups) on one side, every class keeps a train item."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshot.data.split import stratified_split
from fewshot.data.validation import ValidationRule, group_split


def _one_side(key: np.ndarray, train: np.ndarray, val: np.ndarray) -> bool:
    """No code of ``key`` (>= 0) has members both in train and in val."""
    on_train, on_val = set(key[train].tolist()), set(key[val].tolist())
    return not ({k for k in on_train & on_val if k >= 0})


@st.composite
def _catalogue(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(1, 60))
    ints = lambda hi: st.lists(st.integers(0, hi), min_size=n, max_size=n).map(np.array)  # noqa: E731
    labels, groups = draw(ints(4)), draw(ints(6))
    linked = draw(st.lists(st.integers(-1, 5), min_size=n, max_size=n).map(np.array))
    return labels, groups, linked


@settings(max_examples=150, deadline=None)
@given(_catalogue(), st.floats(0.0, 0.9), st.integers(0, 3), st.integers(1, 3), st.booleans())
def test_group_split_never_splits_a_group_or_a_copy_group(data, fraction, seed, min_per_class, subset) -> None:
    labels, groups, linked = data
    indices = np.arange(0, len(labels), 2) if subset else None
    train, val = group_split(labels, groups, fraction, seed, indices=indices, min_per_class=min_per_class,
                             linked=linked)
    pool = np.arange(len(labels)) if indices is None else indices
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), pool)  # a partition of the pool
    unit = labels * 100 + groups  # a group is taken within its class
    assert _one_side(unit, train, val)
    assert _one_side(linked, train, val)
    assert set(labels[pool].tolist()) == set(labels[train].tolist())  # every class keeps a training item
    assert train.dtype == val.dtype == np.int64 and (np.diff(train) > 0).all() and (np.diff(val) > 0).all()


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3])
def test_fraction_is_roughly_respected_with_many_groups(fraction: float) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 300)
    groups = rng.integers(0, 60, size=labels.size)  # about 5 items a group
    train, val = group_split(labels, groups, fraction, seed=1)
    for c in range(5):
        share = np.isin(np.flatnonzero(labels == c), val).mean()
        assert abs(share - fraction) < 0.03


def test_same_seed_same_split_other_seed_other_split() -> None:
    rng = np.random.default_rng(0)
    labels, groups = rng.integers(0, 4, 400), rng.integers(0, 40, 400)
    a, b, c = (group_split(labels, groups, 0.2, seed)[1] for seed in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_class_in_a_single_group_gets_no_validation_items() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    groups = np.array([5, 5, 5, 5, 1, 1, 2, 2, 3])
    train, val = group_split(labels, groups, 0.5, seed=0)
    assert not np.isin(np.flatnonzero(labels != 1), val).any()  # class 0: one group; class 2: one item
    assert sorted(groups[val].tolist()) in ([1, 1], [2, 2])


def test_linked_copies_across_classes_pull_their_groups_together() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    groups = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    linked = np.array([-1, 3, -1, -1, 3, -1, -1, -1])  # item 1 (class 0) and item 4 (class 1) are one picture
    for seed in range(10):
        train, val = group_split(labels, groups, 0.5, seed, linked=linked)
        assert np.isin([0, 1, 4, 5], val).all() or np.isin([0, 1, 4, 5], train).all()


def test_rule_stratified_is_stratified_split() -> None:
    labels = np.repeat(np.arange(3), 10)
    train, val, applied = ValidationRule("stratified", fraction=0.2).split(labels, seed=3)
    expected = stratified_split(labels, 0.2, 3)
    np.testing.assert_array_equal(train, expected[0])
    np.testing.assert_array_equal(val, expected[1])
    assert applied.fallback is None


def test_rule_group_reads_groups_from_table_columns() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"year": rng.integers(2010, 2014, 200), "season": rng.choice(["Summer", "Fall"], 200)})
    labels = rng.integers(0, 3, 200)
    rule = ValidationRule("group", ("year", "season"), 0.2)
    train, val, applied = rule.split(labels, seed=0, table=table)
    assert applied == rule and val.size
    unit = pd.Series(list(zip(labels, table.year, table.season)))
    assert not set(unit[train]) & set(unit[val])
    assert rule.describe() == "group: whole (year, season) groups held out, 20% per class, pixel-identical copies on one side"
    assert rule.describe(share=False).startswith("group: whole (year, season) groups held out, per class")


@pytest.mark.parametrize("table, reason", [
    (pd.DataFrame({"year": [2012] * 20}), "no column 'season'"),
    (pd.DataFrame({"year": [2012] * 20, "season": ["Fall"] * 20}), "single group"),
])
def test_rule_falls_back_to_stratified_and_records_why(table: pd.DataFrame, reason: str) -> None:
    labels = np.repeat([0, 1], 10)
    rule = ValidationRule("group", ("year", "season"), 0.2)
    train, val, applied = rule.split(labels, seed=0, table=table)
    expected = stratified_split(labels, 0.2, 0)
    np.testing.assert_array_equal(val, expected[1])
    assert applied.kind == "stratified" and reason in applied.fallback
    assert reason in applied.describe() and applied.to_dict()["fallback"] == applied.fallback
    assert ValidationRule.from_dict(applied.to_dict()) == applied


@pytest.mark.parametrize("call, match", [
    (lambda: group_split([0, 1], [0, 1, 2], 0.2, 0), "aligned with labels"),
    (lambda: group_split([0, 1], [0, 1], 1.0, 0), r"\[0, 1\)"),
    (lambda: ValidationRule("group", (), 0.2), "needs group_key"),
    (lambda: ValidationRule("random"), "unknown validation kind"),
    (lambda: ValidationRule("group", ("year",)).split([0, 1], 0), "needs table= or groups="),
])
def test_mistakes_raise_one_clear_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def _union_find(keys: list[np.ndarray], n: int) -> np.ndarray:
    """Reference: join items sharing a code >= 0 of any key, one pair at a time."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for key in keys:
        for i in range(n):
            for j in range(i):
                if key[i] >= 0 and key[i] == key[j]:
                    parent[root(i)] = root(j)
    return np.array([root(i) for i in range(n)])


@settings(max_examples=100, deadline=None)
@given(_catalogue())
def test_merged_groups_are_the_union_findconnected_groups(data) -> None:
    from fewshot.data.validation import connected_groups

    _, groups, linked = data
    ours, ref = connected_groups([groups, linked], len(groups)), _union_find([groups, linked], len(groups))
    # the same partition: equal labels exactly where the reference's labels are equal
    np.testing.assert_array_equal(ours[:, None] == ours[None, :], ref[:, None] == ref[None, :])
