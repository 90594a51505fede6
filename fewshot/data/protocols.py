"""The two evaluation protocols: *transfer* (head -> tail across years) and *episodic* (fixed class lists).

Both are frozen objects built from a products table (a :class:`~fewshot.data.dataset.FashionProducts`'s
``styles``: one row per usable image, with ``articleType`` and ``year``). Index arrays index rows of
that table, so they index the dataset too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pandas as pd

from fewshot.data.duplicates import check_groups, copies_across, keep_one_per_group
from fewshot.utils.errors import UserError

TRANSFER_GROUPS = ("head", "tail", "all")  # "all": head + tail, scored by one classifier


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    a.setflags(write=False)
    return a


def _none() -> np.ndarray:
    return _frozen(np.empty(0, dtype=np.int64))


def _group_targets(
    articles: np.ndarray, groups: Mapping[str, tuple[str, ...]], indices: np.ndarray, group: str
) -> np.ndarray:
    if group not in groups:
        raise ValueError(f"group must be one of {sorted(groups)}, got {group!r}")
    lookup = {c: i for i, c in enumerate(groups[group])}
    try:
        return np.array([lookup[a] for a in articles[np.asarray(indices, dtype=np.int64)]], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"row of class {err.args[0]!r} is not in the {group} group") from None


def _by_role(table: pd.DataFrame, roles: tuple[str, ...], count: str) -> pd.DataFrame:
    """Rows grouped by role in ``roles`` order, largest ``count`` first, then by name."""
    rank = table["role"].map({r: i for i, r in enumerate(roles)})
    return (table.assign(_rank=rank).sort_values(["_rank", count, "class"], ascending=[True, False, True])
            .drop(columns="_rank").reset_index(drop=True))


def class_list(name: str) -> tuple[str, ...]:
    """The shipped list ``background`` (60 classes) or ``evaluation`` (47), in the published order."""
    if name not in ("background", "evaluation"):
        raise ValueError(f"unknown class list {name!r}; known: background, evaluation")
    text = resources.files("fewshot.data").joinpath(f"{name}_classes.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True, eq=False)
class TransferProtocol:
    """Train on even years, test on odd years; head = the ``n_head`` classes most frequent in train.

    ``head`` is ordered by train count (descending; ties by name), ``tail`` by name. A class's label in
    its group is its position in ``head`` or ``tail`` (see :meth:`targets`).

    Built with ``duplicate_groups`` (see :mod:`fewshot.data.duplicates`), test images whose pixel copy is a
    train image (of any class) are left out of the test rows and of ``counts["n_test"]``, and listed in
    ``dropped_test``; the head/tail choice, made on train counts, is the same either way.
    """

    head: tuple[str, ...]
    tail: tuple[str, ...]
    excluded: Mapping[str, str]  # class -> reason
    head_train: np.ndarray
    head_test: np.ndarray
    tail_train: np.ndarray
    tail_test: np.ndarray
    no_year: np.ndarray  # rows without a year: in neither split
    counts: pd.DataFrame = field(repr=False)  # per class: n_train, n_test
    articles: np.ndarray = field(repr=False)  # articleType per row, to map rows to group labels
    n_head: int = 20
    min_train: int = 1
    dropped_test: np.ndarray = field(default_factory=_none, repr=False)  # test rows with a copy in train
    deduplicated: bool = False  # built with duplicate_groups

    @classmethod
    def from_styles(
        cls, styles: pd.DataFrame, *, n_head: int = 20, min_train: int = 1,
        duplicate_groups: np.ndarray | None = None,
    ) -> TransferProtocol:
        """The protocol of ``styles``; ``duplicate_groups`` int64 [len(styles)] (pixel-copy group per row, -1
        for none) drops the test rows that have a copy among the train rows."""
        if n_head < 1 or min_train < 1:
            raise ValueError(f"n_head and min_train must be >= 1, got n_head={n_head}, min_train={min_train}")
        articles = styles["articleType"].astype(object).to_numpy()
        year = styles["year"]
        has_year = year.notna().to_numpy()
        is_train = has_year & (year.fillna(1).to_numpy(np.int64) % 2 == 0)
        is_test = has_year & ~is_train
        dropped = _none()
        if duplicate_groups is not None:
            groups = check_groups(duplicate_groups, len(styles))
            dropped = _frozen(copies_across(groups, np.flatnonzero(is_train), np.flatnonzero(is_test)))
            is_test = is_test.copy()
            is_test[dropped] = False
        counts = pd.DataFrame({
            "n_train": pd.Series(articles[is_train]).value_counts(),
            "n_test": pd.Series(articles[is_test]).value_counts(),
        }).fillna(0).astype(np.int64)
        if len(dropped):  # a class whose every test image was dropped keeps its row, with n_test 0
            counts = counts.reindex(counts.index.union(pd.Index(articles[dropped]).dropna().unique()), fill_value=0)
        counts.index.name = "class"
        ranked = sorted(counts.index[counts["n_train"] > 0], key=lambda c: (-counts.at[c, "n_train"], c))
        if len(ranked) < n_head:
            raise UserError(f"only {len(ranked)} classes have train (even-year) images; n_head={n_head} "
                            "needs at least that many; lower n_head (fewshot summary --n-head; benchmark "
                            "config: data.n_head)")
        head = tuple(ranked[:n_head])
        tail = tuple(sorted(c for c in ranked[n_head:] if counts.at[c, "n_train"] >= min_train))
        excluded: dict[str, str] = {}
        for c in counts.index:
            if counts.at[c, "n_train"] == 0:
                excluded[c] = f"only in test (odd) years: 0 train, {counts.at[c, 'n_test']} test images"
            elif c not in head and c not in tail:
                excluded[c] = f"fewer than min_train={min_train} train images ({counts.at[c, 'n_train']})"
        for c in sorted(set(articles[~has_year]) - set(counts.index)):
            excluded[c] = "every image has no year"
        in_head, in_tail = np.isin(articles, head), np.isin(articles, tail)
        return cls(
            head=head, tail=tail, excluded=MappingProxyType(dict(sorted(excluded.items()))),
            head_train=_frozen(np.flatnonzero(in_head & is_train)),
            head_test=_frozen(np.flatnonzero(in_head & is_test)),
            tail_train=_frozen(np.flatnonzero(in_tail & is_train)),
            tail_test=_frozen(np.flatnonzero(in_tail & is_test)),
            no_year=_frozen(np.flatnonzero(~has_year)),
            counts=counts.sort_index(), articles=articles, n_head=n_head, min_train=min_train,
            dropped_test=dropped, deduplicated=duplicate_groups is not None,
        )

    @property
    def all(self) -> tuple[str, ...]:
        """The joint group: head then tail classes, one classifier over every class."""
        return self.head + self.tail

    @property
    def all_train(self) -> np.ndarray:
        """Head then tail train rows (the joint group's train images, in its label order's blocks)."""
        return _frozen(np.concatenate([self.head_train, self.tail_train]))

    @property
    def all_test(self) -> np.ndarray:
        return _frozen(np.concatenate([self.head_test, self.tail_test]))

    def classes(self, group: str) -> tuple[str, ...]:
        """The class names of ``group`` ("head", "tail" or "all"), in label order."""
        if group not in TRANSFER_GROUPS:
            raise ValueError(f"group must be one of {', '.join(TRANSFER_GROUPS)}, got {group!r}")
        return getattr(self, group)

    def targets(self, indices: np.ndarray, group: str) -> np.ndarray:
        """Labels 0..len(group)-1 of rows ``indices`` within ``group`` ("head", "tail" or "all")."""
        return _group_targets(self.articles, {g: self.classes(g) for g in TRANSFER_GROUPS}, indices, group)

    def summary(self) -> pd.DataFrame:
        """One row per class: n_train, n_test, role (head/tail/excluded) and the reason for exclusions."""
        rows = []
        for c in sorted(set(self.counts.index) | set(self.excluded)):
            n_train = int(self.counts.at[c, "n_train"]) if c in self.counts.index else 0
            n_test = int(self.counts.at[c, "n_test"]) if c in self.counts.index else 0
            role = "head" if c in self.head else "tail" if c in self.tail else "excluded"
            rows.append((c, n_train, n_test, role, self.excluded.get(c, "")))
        table = pd.DataFrame(rows, columns=["class", "n_train", "n_test", "role", "reason"])
        return _by_role(table, ("head", "tail", "excluded"), "n_train")

    def totals(self) -> dict[str, object]:
        return {
            "head": list(self.head), "tail": list(self.tail),
            "n_head_train": len(self.head_train), "n_head_test": len(self.head_test),
            "n_tail_train": len(self.tail_train), "n_tail_test": len(self.tail_test),
            "n_tail_with_test": int((self.counts.loc[list(self.tail), "n_test"] > 0).sum()) if self.tail else 0,
            "n_no_year": len(self.no_year), "excluded": dict(self.excluded),
            **self._dropped_totals(),
        }

    def _dropped_totals(self) -> dict[str, int]:
        """With duplicate groups: test images dropped because their copy is in train, overall and by group."""
        if not self.deduplicated:
            return {}
        classes = self.articles[self.dropped_test]
        return {"n_dropped_test": len(self.dropped_test), "n_head_test_dropped": int(np.isin(classes, self.head).sum()),
                "n_tail_test_dropped": int(np.isin(classes, self.tail).sum())}


@dataclass(frozen=True, eq=False)
class EpisodicProtocol:
    """Fixed background / evaluation class lists, all years pooled (Vinyals et al. 2016's split style).

    Listed classes with fewer than ``min_images`` images (default 20 = 5 shots + 15 queries) are
    excluded, as are classes in neither list.

    Built with ``duplicate_groups`` (see :mod:`fewshot.data.duplicates`), only the first image of each group
    of pixel copies is kept, before images are counted; the others are listed in ``dropped_duplicates``.
    Without it a picture and its copy can be the support and the query of one episode.
    """

    background: tuple[str, ...]
    evaluation: tuple[str, ...]
    excluded: Mapping[str, str]
    background_idx: np.ndarray
    evaluation_idx: np.ndarray
    counts: pd.Series = field(repr=False)
    articles: np.ndarray = field(repr=False)
    min_images: int = 20
    dropped_duplicates: np.ndarray = field(default_factory=_none, repr=False)  # rows left out as copies
    deduplicated: bool = False  # built with duplicate_groups

    @classmethod
    def from_styles(
        cls,
        styles: pd.DataFrame,
        *,
        min_images: int = 20,
        background: tuple[str, ...] | None = None,
        evaluation: tuple[str, ...] | None = None,
        duplicate_groups: np.ndarray | None = None,
    ) -> EpisodicProtocol:
        """The protocol of ``styles``; ``duplicate_groups`` int64 [len(styles)] (pixel-copy group per row, -1
        for none) keeps one image per group (the first row) before counting images per class."""
        if min_images < 1:
            raise ValueError(f"min_images must be >= 1, got {min_images}")
        background = class_list("background") if background is None else tuple(background)
        evaluation = class_list("evaluation") if evaluation is None else tuple(evaluation)
        overlap = set(background) & set(evaluation)
        if overlap:
            raise ValueError(f"classes in both background and evaluation lists: {sorted(overlap)}")
        articles = styles["articleType"].astype(object).to_numpy()
        keep = np.ones(len(articles), dtype=bool)
        if duplicate_groups is not None:
            keep = keep_one_per_group(check_groups(duplicate_groups, len(styles)))
        counts = pd.Series(articles[keep]).value_counts()
        lost = pd.Index(articles[~keep]).dropna().unique().difference(counts.index)
        if len(lost):  # classes whose every image is a copy of another class's keep a row, with 0 images
            counts = pd.concat([counts, pd.Series(0, index=lost, name=counts.name, dtype=counts.dtype)])
        excluded: dict[str, str] = {}
        kept: dict[str, list[str]] = {"background": [], "evaluation": []}
        for group, names in (("background", background), ("evaluation", evaluation)):
            for c in names:
                n = int(counts.get(c, 0))
                if n < min_images:
                    excluded[c] = (f"{group} class with {n} images, fewer than min_images={min_images}"
                                   if c in counts.index else f"{group} class absent from the data (0 images)")
                else:
                    kept[group].append(c)
        for c in counts.index:
            if c not in background and c not in evaluation:
                excluded[c] = "in neither the background nor the evaluation list"
        return cls(
            background=tuple(kept["background"]), evaluation=tuple(kept["evaluation"]),
            excluded=MappingProxyType(dict(sorted(excluded.items()))),
            background_idx=_frozen(np.flatnonzero(keep & np.isin(articles, kept["background"]))),
            evaluation_idx=_frozen(np.flatnonzero(keep & np.isin(articles, kept["evaluation"]))),
            counts=counts, articles=articles, min_images=min_images,
            dropped_duplicates=_frozen(np.flatnonzero(~keep)), deduplicated=duplicate_groups is not None,
        )

    def targets(self, indices: np.ndarray, group: str) -> np.ndarray:
        """Labels 0..len(group)-1 of rows ``indices`` within ``group`` ("background" or "evaluation")."""
        groups = {"background": self.background, "evaluation": self.evaluation}
        return _group_targets(self.articles, groups, indices, group)

    def summary(self) -> pd.DataFrame:
        """One row per class: n_images, role (background/evaluation/excluded) and the reason."""
        rows = []
        for c in sorted(set(self.counts.index) | set(self.excluded) | set(self.background) | set(self.evaluation)):
            role = "background" if c in self.background else "evaluation" if c in self.evaluation else "excluded"
            rows.append((c, int(self.counts.get(c, 0)), role, self.excluded.get(c, "")))
        table = pd.DataFrame(rows, columns=["class", "n_images", "role", "reason"])
        return _by_role(table, ("background", "evaluation", "excluded"), "n_images")

    def totals(self) -> dict[str, object]:
        return {
            "background": list(self.background), "evaluation": list(self.evaluation),
            "n_background_images": len(self.background_idx), "n_evaluation_images": len(self.evaluation_idx),
            "excluded": dict(self.excluded), **self._dropped_totals(),
        }

    def _dropped_totals(self) -> dict[str, int]:
        """With duplicate groups: copies left out, overall and from the kept classes of each role."""
        if not self.deduplicated:
            return {}
        classes = self.articles[self.dropped_duplicates]
        return {"n_dropped_duplicates": len(self.dropped_duplicates),
                "n_background_dropped": int(np.isin(classes, self.background).sum()),
                "n_evaluation_dropped": int(np.isin(classes, self.evaluation).sum())}
