"""Validation that behaves like the test: whole groups held out, as data (:class:`ValidationRule`).

In a catalogue one product appears several times in one year (colour variants with near-identical titles,
re-shoots, pixel copies), so a random validation image usually has a sibling in train, while the test years
hold other products: a random share flatters every method and picks settings for the wrong problem.
:func:`group_split` holds out whole groups of each class instead (e.g. a (year, season)), with pixel copies
kept on one side; :func:`validation_split` is what a classifier calls, stratified without groups.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fewshot.data.split import stratified_split

if TYPE_CHECKING:  # only for the annotation: the split itself needs no pandas
    import pandas as pd


def validation_split(labels: Sequence[int] | np.ndarray, fraction: float, seed: int, *,
                     groups: Sequence[int] | np.ndarray | None = None,
                     indices: Sequence[int] | np.ndarray | None = None,
                     min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) of ``labels``' positions (or of the dataset rows ``indices``, as :func:`stratified_split`
    returns them): :func:`stratified_split` without ``groups``; with them (int codes aligned with ``labels``)
    :func:`group_split`, every code a constraint: the items sharing one stay on one side, across classes too
    (:meth:`ValidationRule.row_groups` makes such codes). What a classifier that chooses its settings on a
    validation split of its support calls (``fit(..., groups=...)``), and a trainer's split of its rows."""
    if groups is None:
        return stratified_split(labels, fraction, seed, indices=indices, min_per_class=min_per_class)
    return group_split(labels, groups, fraction, seed, indices=indices, min_per_class=min_per_class, linked=groups)


def connected_groups(keys: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Connected components 0..G-1 [n] of n items, two items joined when they share a code (>= 0) of any
    of ``keys`` (int arrays [n]): the union of the relations. Vectorised min-label propagation; each pass
    shortens every path, so it stops after about as many passes as the longest chain of links."""
    comp = np.arange(n)
    while True:
        old = comp.copy()
        for key in keys:
            has = key >= 0
            if not has.any():
                continue
            low = np.full(int(key.max()) + 1, n)
            np.minimum.at(low, key[has], comp[has])
            comp = np.where(has, low[np.where(has, key, 0)], comp)
        comp = comp[comp]  # jump to the label's own label: halves chains, as path compression does
        if np.array_equal(comp, old):
            return np.unique(comp, return_inverse=True)[1]


def group_split(labels: Sequence[int] | np.ndarray, groups: Sequence[int] | np.ndarray, fraction: float, seed: int,
                *, indices: Sequence[int] | np.ndarray | None = None, min_per_class: int = 1,
                linked: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split into (train, val), sorted int64 arrays, holding out whole groups of each class.

    ``groups`` [len(labels)] int codes (e.g. of each image's (year, season)); a group is taken within a class,
    so the unit is a (label, group) pair: a product's colour variants and re-shoots of one season share one,
    and a random image split would leave their siblings in train (validation far easier than a new year).
    ``linked`` [len(labels)]: pixel-copy group ids (-1 = no copy), merged with the groups (union of the two
    relations), so all copies of one picture end on one side, even across classes. ``indices`` and the
    return convention are those of :func:`stratified_split`, and so is each class's target,
    round(fraction * n) in [min_per_class, n - 1] items.

    Per class, in label order, the class's merged groups not yet held out are visited in a seeded random
    order; one is held out when that brings the class's validation count closer to its target, then, while
    the class has fewer than ``min_per_class`` validation items, the smallest remaining ones are. A group
    is never held out if it would take a class's last training item. A class whose items lie in a single
    merged group (a single item included) gets no validation items: a stratified draw would split a group
    and make validation easier than the test, which is what this split exists to prevent.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction={fraction} must lie in [0, 1)")
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    linked = np.full(len(labels), -1) if linked is None else np.asarray(linked, dtype=np.int64)
    if groups.shape != labels.shape or linked.shape != labels.shape:
        raise ValueError(f"groups {groups.shape} and linked {linked.shape} must be aligned with labels {labels.shape}")
    pool = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    if fraction == 0.0 or pool.size == 0:
        return np.sort(pool), np.empty(0, dtype=np.int64)
    classes, y = np.unique(labels[pool], return_inverse=True)
    unit = np.unique(np.stack([y, groups[pool]]), axis=1, return_inverse=True)[1].reshape(-1)
    comp = connected_groups([unit, linked[pool]], pool.size)
    pairs, pair_n = np.unique(comp * len(classes) + y, return_counts=True)
    members: dict[int, dict[int, int]] = {}  # merged group -> {class: items}
    for g, k, m in zip((pairs // len(classes)).tolist(), (pairs % len(classes)).tolist(), pair_n.tolist()):
        members.setdefault(g, {})[k] = m
    n = np.bincount(y, minlength=len(classes))
    target = np.where(n >= 2, np.minimum(n - 1, np.maximum(min_per_class, np.floor(fraction * n + 0.5))), 0)
    target = target.astype(np.int64).tolist()
    train_left, val_n = n.tolist(), [0] * len(classes)
    held = np.zeros(int(comp.max()) + 1, dtype=bool)
    rng = np.random.default_rng(seed)

    def fits(g: int) -> bool:
        return all(train_left[k] - m >= 1 for k, m in members[g].items())

    def hold(g: int) -> None:
        held[g] = True
        for k, m in members[g].items():
            train_left[k] -= m
            val_n[k] += m

    by_class: dict[int, list[int]] = {}
    for g in sorted(members):
        for k in members[g]:
            by_class.setdefault(k, []).append(g)
    for k in range(len(classes)):
        if target[k] == 0 or len(by_class[k]) < 2:
            continue
        order = rng.permutation(by_class[k]).tolist()
        for g in order:
            if not held[g] and abs(val_n[k] + members[g][k] - target[k]) < abs(val_n[k] - target[k]) and fits(g):
                hold(g)
        for g in sorted(order, key=lambda g: members[g][k]):  # stable: ties keep the random order
            if val_n[k] >= min_per_class:
                break
            if not held[g] and fits(g):
                hold(g)
    val_idx = np.sort(pool[held[comp]])
    return np.setdiff1d(pool, val_idx), val_idx


@dataclass(frozen=True)
class ValidationRule:
    """How a validation split is carved, as data (for configs and result files).

    kind: ``"stratified"`` (:func:`stratified_split`) or ``"group"`` (:func:`group_split` over the groups of
    the table columns ``group_key``). fraction: share of each class's items held out.
    fallback: set on the rule :meth:`split` actually applied when a group rule could not be: why it fell
    back to stratified (a column missing, or every class in a single group).
    """

    kind: Literal["stratified", "group"] = "stratified"
    group_key: tuple[str, ...] = ()
    fraction: float = 0.1
    min_per_class: int = 1
    fallback: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_key", tuple(self.group_key))
        if self.kind not in ("stratified", "group"):
            raise ValueError(f"unknown validation kind {self.kind!r}; known: stratified, group")
        if self.kind == "group" and not self.group_key:
            raise ValueError("a group validation rule needs group_key, the table columns that form a group")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"val_fraction={self.fraction} must lie in [0, 1)")

    def resolve(self, labels: Sequence[int] | np.ndarray, *, table: pd.DataFrame | None = None,
                groups: Sequence[int] | np.ndarray | None = None,
                indices: Sequence[int] | np.ndarray | None = None) -> tuple[ValidationRule, np.ndarray | None]:
        """(the rule that applies, its group codes aligned with ``labels`` or None): this rule with the codes of
        ``groups``, or of the ``group_key`` columns of ``table`` (rows aligned with labels); a stratified rule
        whose ``fallback`` says why when a column is missing or every class (of ``indices``) lies in a single
        group."""
        if self.kind == "stratified":
            return self, None
        if groups is None and table is None:
            raise ValueError(f"the group rule over {self.group_key} needs table= or groups=")
        reason = None
        if groups is None:
            missing = [col for col in self.group_key if col not in table.columns]
            if missing:
                reason = f"no column {', '.join(map(repr, missing))} in the table"
            else:
                groups = table.groupby(list(self.group_key), sort=True, dropna=False).ngroup().to_numpy()
        if reason is None:
            pool = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
            pairs = np.stack([np.asarray(labels, dtype=np.int64)[pool], np.asarray(groups, dtype=np.int64)[pool]])
            if pool.size and len(np.unique(pairs, axis=1)[0]) == len(np.unique(pairs[0])):
                reason = "every class lies in a single group"
        if reason is not None:
            return replace(self, kind="stratified", fallback=reason), None
        return self, np.asarray(groups, dtype=np.int64)

    def row_groups(self, labels: Sequence[int] | np.ndarray, table: pd.DataFrame, *,
                   linked: Sequence[int] | np.ndarray | None = None,
                   indices: Sequence[int] | np.ndarray | None = None) -> tuple[ValidationRule, np.ndarray | None]:
        """(applied rule, codes [len(labels)] or None): each item's (class, group) merged with its pixel copies
        (``linked``, -1 = none), so that one code is one thing to keep on one side of every split, for
        :func:`validation_split` and ``fit(..., groups=)``; None when the rule is (or falls back to)
        stratified (:meth:`resolve`, over the classes of ``indices``)."""
        applied, codes = self.resolve(labels, table=table, indices=indices)
        if codes is None:
            return applied, None
        labels = np.asarray(labels, dtype=np.int64)
        unit = np.unique(np.stack([labels, codes]), axis=1, return_inverse=True)[1].reshape(-1)
        keys = [unit] if linked is None else [unit, np.asarray(linked, dtype=np.int64)]
        return applied, connected_groups(keys, len(labels))

    def split(self, labels: Sequence[int] | np.ndarray, seed: int, *, table: pd.DataFrame | None = None,
              groups: Sequence[int] | np.ndarray | None = None, indices: Sequence[int] | np.ndarray | None = None,
              linked: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, ValidationRule]:
        """(train, val, applied rule): the arrays as :func:`stratified_split` returns them, and this rule or,
        when it fell back, a stratified one whose ``fallback`` says why (:meth:`resolve`); ``linked``
        pixel-copy ids are honoured by the group rule only."""
        applied, codes = self.resolve(labels, table=table, groups=groups, indices=indices)
        if codes is None:
            return (*stratified_split(labels, self.fraction, seed, indices=indices, min_per_class=self.min_per_class),
                    applied)
        return (*group_split(labels, codes, self.fraction, seed, indices=indices, min_per_class=self.min_per_class,
                             linked=linked), applied)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "group_key": list(self.group_key)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationRule:
        return cls(**data)

    def describe(self, share: bool = True) -> str:
        """One line in words, e.g. "group: whole (year, season) groups held out, 20% per class" (without the
        share when each choice made on validation keeps its own fraction: ``share=False``)."""
        share_words = f", {self.fraction:.0%} per class" if share else ", per class"
        if self.kind == "group":
            return (f"group: whole ({', '.join(self.group_key)}) groups held out{share_words}, pixel-identical "
                    "copies on one side")
        text = (f"stratified: {self.fraction:.0%} of each class's items at random" if share
                else "stratified: a random share of each class's items")
        if self.fallback:
            text += f" (fallback from group ({', '.join(self.group_key)}): {self.fallback})"
        return text
