"""The two evaluation protocols: *transfer* (head -> tail across a train/test split) and *episodic*
(background / evaluation classes).

Both are frozen objects built from the rows of a catalogue (:class:`~fewshot.data.catalog.Catalog`: one row
per usable image) with :meth:`TransferProtocol.from_catalog` / :meth:`EpisodicProtocol.from_catalog`, or from
a Kaggle products table (``styles``, with ``articleType`` and ``year``) with ``from_styles``, today's
protocol: train = even years, test = odd years; the shipped class lists. Which rows are train or test and
which classes are background or evaluation are data (:mod:`fewshot.data.rules`). Index arrays index rows of
the table, so they index the dataset too.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

from fewshot.data.duplicates import check_groups, copies_across, keep_one_per_group
from fewshot.data.rules import KAGGLE_SPLIT, NEITHER, TEST, TRAIN, ClassSplit, SplitRule
from fewshot.utils.errors import UserError

if TYPE_CHECKING:
    from fewshot.data.catalog import Catalog

TRANSFER_GROUPS = ("head", "tail", "all")  # "all": head + tail, scored by one classifier


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    a.setflags(write=False)
    return a


def _none() -> np.ndarray:
    return _frozen(np.empty(0, dtype=np.int64))


def _frozen_int8(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.int8)
    a.setflags(write=False)
    return a


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


def shipped_classes() -> ClassSplit:
    """The Kaggle catalogue's published background / evaluation lists, as a :class:`ClassSplit`."""
    return ClassSplit.lists(class_list("background"), class_list("evaluation"), source="the shipped Kaggle lists")


@dataclass(frozen=True, eq=False)
class TransferProtocol:
    """Train on the train images, test on the test ones (``rule``: the Kaggle catalogue's even / odd years,
    a manifest's split column, a seeded stratified split...); head = the ``n_head`` classes most frequent in
    train, tail = the others with at least ``min_train`` train images.

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
    no_year: np.ndarray  # rows in neither split (Kaggle: without a year)
    counts: pd.DataFrame = field(repr=False)  # per class: n_train, n_test
    articles: np.ndarray = field(repr=False)  # articleType per row, to map rows to group labels
    n_head: int = 20
    min_train: int = 1
    dropped_test: np.ndarray = field(default_factory=_none, repr=False)  # test rows with a copy in train
    deduplicated: bool = False  # built with duplicate_groups
    rule: SplitRule = KAGGLE_SPLIT  # how rows were split into train and test
    assignment: np.ndarray = field(default_factory=_none, repr=False)  # int8 per row: rules.TRAIN/TEST/NEITHER

    @classmethod
    def from_styles(
        cls, styles: pd.DataFrame, *, n_head: int = 20, min_train: int = 1,
        duplicate_groups: np.ndarray | None = None,
    ) -> TransferProtocol:
        """The protocol of the Kaggle table ``styles`` (train = even years, test = odd years);
        ``duplicate_groups`` int64 [len(styles)] (pixel-copy group per row, -1 for none) drops the test rows
        that have a copy among the train rows."""
        return cls.from_assignment(styles["articleType"].astype(object).to_numpy(), KAGGLE_SPLIT.assign(styles),
                                   rule=KAGGLE_SPLIT, n_head=n_head, min_train=min_train,
                                   duplicate_groups=duplicate_groups)

    @classmethod
    def from_catalog(
        cls, ds: Catalog, rule: SplitRule, *, n_head: int = 20, min_train: int = 1,
        duplicate_groups: np.ndarray | None = None,
    ) -> TransferProtocol:
        """The protocol of a catalogue's rows, split by ``rule``."""
        return cls.from_assignment(ds.row_labels, rule.assign(ds.table, ds.labels), rule=rule, n_head=n_head,
                                   min_train=min_train, duplicate_groups=duplicate_groups)

    @classmethod
    def from_assignment(
        cls, articles: np.ndarray, assignment: np.ndarray, *, rule: SplitRule = KAGGLE_SPLIT, n_head: int = 20,
        min_train: int = 1, duplicate_groups: np.ndarray | None = None,
    ) -> TransferProtocol:
        """The protocol of rows of class ``articles`` (object [N], None/NA for unlabelled) whose split is
        ``assignment`` (int8 [N] of :data:`~fewshot.data.rules.TRAIN`, ``TEST`` or ``NEITHER``); ``rule`` names
        the split in messages and reports."""
        if n_head < 1 or min_train < 1:
            raise ValueError(f"n_head and min_train must be >= 1, got n_head={n_head}, min_train={min_train}")
        articles = np.asarray(articles, dtype=object)
        assignment = np.asarray(assignment, dtype=np.int8)
        has_year = assignment != NEITHER
        is_train = assignment == TRAIN
        is_test = assignment == TEST
        dropped = _none()
        if duplicate_groups is not None:
            groups = check_groups(duplicate_groups, len(articles))
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
            fix = f"n_head={len(ranked) - 1} leaves one tail class" if len(ranked) > 1 else "no n_head leaves a tail"
            have = f"{len(ranked)} class has" if len(ranked) == 1 else f"{len(ranked)} classes have"
            raise UserError(f"only {have} train {rule.train_words()}images; n_head={n_head} takes "
                            f"{n_head} for the head, and a tail needs more ({n_head + 1} in all); lower n_head "
                            f"({fix}; fewshot summary --n-head; benchmark config: data.n_head)")
        head = tuple(ranked[:n_head])
        tail = tuple(sorted(c for c in ranked[n_head:] if counts.at[c, "n_train"] >= min_train))
        excluded: dict[str, str] = {}
        for c in counts.index:
            if counts.at[c, "n_train"] == 0:
                excluded[c] = rule.test_only_reason(counts.at[c, "n_test"])
            elif c not in head and c not in tail:
                excluded[c] = f"fewer than min_train={min_train} train images ({counts.at[c, 'n_train']})"
        for c in sorted(set(articles[~has_year]) - set(counts.index)):
            excluded[c] = rule.neither_reason()
        in_head, in_tail = np.isin(articles, head), np.isin(articles, tail)
        return cls(
            head=head, tail=tail, excluded=MappingProxyType(dict(sorted(excluded.items()))),
            head_train=_frozen(np.flatnonzero(in_head & is_train)),
            head_test=_frozen(np.flatnonzero(in_head & is_test)),
            tail_train=_frozen(np.flatnonzero(in_tail & is_train)),
            tail_test=_frozen(np.flatnonzero(in_tail & is_test)),
            no_year=_frozen(np.flatnonzero(~has_year)),
            counts=counts.sort_index(), articles=articles, n_head=n_head, min_train=min_train,
            dropped_test=dropped, deduplicated=duplicate_groups is not None, rule=rule,
            assignment=_frozen_int8(assignment),
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
            **self._dropped_totals(), "split_rule": self.rule.describe(),
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
    """Background / evaluation classes, all images pooled (Vinyals et al. 2016's split style): fixed class
    lists (the shipped Kaggle ones, or files), or a seeded split of the classes by a fraction
    (``class_split``, :class:`~fewshot.data.rules.ClassSplit`).

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
    class_split: ClassSplit | None = field(default=None, repr=False)  # how the classes were split

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
        """The protocol of the Kaggle table ``styles`` with the shipped class lists (or those given);
        ``duplicate_groups`` int64 [len(styles)] (pixel-copy group per row, -1 for none) keeps one image per group
        (the first row) before counting images per class."""
        if background is None and evaluation is None:
            classes = shipped_classes()
        else:
            classes = ClassSplit.lists(class_list("background") if background is None else tuple(background),
                                       class_list("evaluation") if evaluation is None else tuple(evaluation))
        return cls.from_labels(styles["articleType"].astype(object).to_numpy(), classes, min_images=min_images,
                               duplicate_groups=duplicate_groups)

    @classmethod
    def from_catalog(cls, ds: Catalog, classes: ClassSplit, *, min_images: int = 20,
                     duplicate_groups: np.ndarray | None = None) -> EpisodicProtocol:
        """The protocol of a catalogue's rows, its classes split by ``classes``."""
        return cls.from_labels(ds.row_labels, classes, min_images=min_images, duplicate_groups=duplicate_groups)

    @classmethod
    def from_labels(cls, articles: np.ndarray, classes: ClassSplit, *, min_images: int = 20,
                    duplicate_groups: np.ndarray | None = None) -> EpisodicProtocol:
        """The protocol of rows of class ``articles`` (object [N]), the classes split by ``classes``."""
        if min_images < 1:
            raise ValueError(f"min_images must be >= 1, got {min_images}")
        articles = np.asarray(articles, dtype=object)
        keep = np.ones(len(articles), dtype=bool)
        if duplicate_groups is not None:
            keep = keep_one_per_group(check_groups(duplicate_groups, len(articles)))
        counts = pd.Series(articles[keep]).value_counts()
        lost = pd.Index(articles[~keep]).dropna().unique().difference(counts.index)
        if len(lost):  # classes whose every image is a copy of another class's keep a row, with 0 images
            counts = pd.concat([counts, pd.Series(0, index=lost, name=counts.name, dtype=counts.dtype)])
        background, evaluation = classes.resolve(counts, min_images)
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
                excluded[c] = (f"{int(counts[c])} images, fewer than min_images={min_images}: in neither group"
                               if classes.seeded else "in neither the background nor the evaluation list")
        return cls(
            background=tuple(kept["background"]), evaluation=tuple(kept["evaluation"]),
            excluded=MappingProxyType(dict(sorted(excluded.items()))),
            background_idx=_frozen(np.flatnonzero(keep & np.isin(articles, kept["background"]))),
            evaluation_idx=_frozen(np.flatnonzero(keep & np.isin(articles, kept["evaluation"]))),
            counts=counts, articles=articles, min_images=min_images,
            dropped_duplicates=_frozen(np.flatnonzero(~keep)), deduplicated=duplicate_groups is not None,
            class_split=classes,
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
            **({"class_split": self.class_split.describe()} if self.class_split is not None else {}),
        }

    def _dropped_totals(self) -> dict[str, int]:
        """With duplicate groups: copies left out, overall and from the kept classes of each role."""
        if not self.deduplicated:
            return {}
        classes = self.articles[self.dropped_duplicates]
        return {"n_dropped_duplicates": len(self.dropped_duplicates),
                "n_background_dropped": int(np.isin(classes, self.background).sum()),
                "n_evaluation_dropped": int(np.isin(classes, self.evaluation).sum())}


def row_roles(n_rows: int, transfer: TransferProtocol | None, episodic: EpisodicProtocol | None) -> pd.DataFrame:
    """What each of ``n_rows`` catalogue rows is in each protocol, for a run's record (``split.csv``).

    ``split``: "train", "test" or "" (in neither split); ``transfer``: head_train, head_test, tail_train,
    tail_test, "copy_of_train" (a test image left out, its pixel copy is a train image), "no_split" or
    "excluded" (its class is in neither group); ``episodic``: background, evaluation, "duplicate" (a pixel copy
    left out) or "excluded". A protocol that did not run gives an empty column.
    """
    table = pd.DataFrame(index=pd.RangeIndex(n_rows))
    if transfer is not None:
        split = np.full(n_rows, "", dtype=object)
        if len(transfer.assignment) == n_rows:
            split[transfer.assignment == TRAIN], split[transfer.assignment == TEST] = "train", "test"
        role = np.full(n_rows, "excluded", dtype=object)
        role[transfer.no_year] = "no_split"
        role[transfer.dropped_test] = "copy_of_train"
        for part in ("head_train", "head_test", "tail_train", "tail_test"):
            role[getattr(transfer, part)] = part
        table["split"], table["transfer"] = split, role
    else:
        table["split"], table["transfer"] = "", ""
    if episodic is not None:
        role = np.full(n_rows, "excluded", dtype=object)
        role[episodic.dropped_duplicates] = "duplicate"
        role[episodic.background_idx], role[episodic.evaluation_idx] = "background", "evaluation"
        table["episodic"] = role
    else:
        table["episodic"] = ""
    return table


def split_rule_for(ds: Catalog, *, split: str = "auto", split_key: str = "split",
                   train_values: tuple[str, ...] = ("train",), test_values: tuple[str, ...] = ("test",),
                   test_fraction: float = 0.25, seed: int = 0, **_: object) -> SplitRule:
    """The transfer protocol's split of ``ds`` under the settings of :class:`benchmarks.config.DataConfig`
    (``split`` "auto", "column" or "stratified"; extra keywords, the class-split settings, are ignored)."""
    if split == "stratified":
        return SplitRule.stratified(test_fraction, seed)
    if split == "column":
        return SplitRule.on_column(split_key, train_values, test_values)
    if split != "auto":
        raise ValueError(f"split must be auto, column or stratified, got {split!r}")
    if ds.layout == "kaggle":
        return KAGGLE_SPLIT
    if "split" in ds.table.columns:  # a manifest's split column, an image folder's train/ and test/
        return SplitRule.on_column("split", ("train",), ("test",))
    return SplitRule.stratified(test_fraction, seed)


def class_split_for(ds: Catalog, *, class_split: str = "auto", background_classes: str = "",
                    evaluation_classes: str = "", background_fraction: float = 0.6, seed: int = 0,
                    **_: object) -> ClassSplit:
    """The episodic protocol's class split of ``ds`` under the settings of
    :class:`benchmarks.config.DataConfig` (``class_split`` "auto", "lists" or "fraction")."""
    if class_split not in ("auto", "lists", "fraction"):
        raise ValueError(f"class_split must be auto, lists or fraction, got {class_split!r}")
    if class_split == "fraction":
        return ClassSplit.fraction(background_fraction, seed)
    if background_classes or evaluation_classes:
        return ClassSplit.from_files(background_classes or None, evaluation_classes or None)
    if ds.layout == "kaggle":
        return shipped_classes()
    if class_split == "lists":
        raise UserError(f"class_split = \"lists\": the {ds.layout} layout has no class lists of its own; name files "
                        "with data.background_classes / data.evaluation_classes (one class per line), or use "
                        "class_split = \"fraction\"")
    return ClassSplit.fraction(background_fraction, seed)


def protocol_digest(ds: Catalog, rule: SplitRule, classes: ClassSplit) -> str:
    """"" for the Kaggle layout's own protocols (train = even years, shipped lists); otherwise the sha256 of
    the rows' classes, their train/test assignment and the class split: what, besides the pixels, decides what
    a phase computes. A run keys its phases with it, so that another split of the same images is another
    experiment."""
    if ds.layout == "kaggle" and rule == KAGGLE_SPLIT and classes == shipped_classes():
        return ""
    h = hashlib.sha256(b"fewshot-protocols-v1;")
    h.update(json.dumps([str(v) if not pd.isna(v) else None for v in ds.row_labels.tolist()]).encode())
    h.update(np.ascontiguousarray(rule.assign(ds.table, ds.labels)).tobytes())
    h.update(json.dumps({k: v for k, v in classes.to_dict().items() if k != "rule"}, sort_keys=True).encode())
    if not classes.seeded:
        h.update(json.dumps([classes.background, classes.evaluation]).encode())
    return h.hexdigest()
