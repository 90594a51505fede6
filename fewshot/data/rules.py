"""The protocols' choices as data, not code: which images are train and which test (:class:`SplitRule`), and
which classes are background and which evaluation (:class:`ClassSplit`).

A :class:`SplitRule` is either a rule on one column of a catalogue table (the Kaggle protocol's "year: even ->
train, odd -> test" is one, :data:`KAGGLE_SPLIT`; a manifest's ``split`` column another) or a seeded stratified
split. A :class:`ClassSplit` is either two class lists (the shipped Kaggle lists, or files) or a seeded split of
the classes by a fraction. Both describe themselves (``describe()``, ``to_dict()``) so a run can record what
it used.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fewshot.data.split import stratified_split
from fewshot.utils.errors import UserError
from fewshot.utils.seeding import derive_seed

NEITHER, TRAIN, TEST = 0, 1, 2  # values of SplitRule.assign's array
PARITY = ("even", "odd")  # values that match integers by parity instead of by text


def _side(values: Sequence[str]) -> str:
    return " or ".join(v if v in PARITY else repr(v) for v in values)


@dataclass(frozen=True)
class SplitRule:
    """Train and test images of the transfer protocol.

    ``column`` set: a rule on that column of the table. A row whose value is one of ``train`` goes to
    train, one of ``test`` to test ("even" / "odd" match integers by parity, other values match the text,
    ignoring case and surrounding spaces); an empty side takes every other non-blank value. Rows with a blank
    value, or a value of neither side, are in neither split (reported, like the Kaggle rows without a year).

    ``column`` None: a seeded stratified split; each class gives round(``test_fraction`` x n) of its n
    images to test, at least one and never all (a class with one image keeps it in train), drawn from the
    stream "test split" of ``seed`` (:func:`fewshot.data.split.stratified_split`).
    """

    column: str | None = None
    train: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    test_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.column is None:
            if not 0.0 < self.test_fraction < 1.0:
                raise UserError(f"test_fraction={self.test_fraction} must lie in (0, 1) (benchmark config: "
                                "data.test_fraction)")
            return
        if not self.train and not self.test:
            raise UserError(f"the split on column {self.column!r} names no train and no test value (benchmark "
                            "config: data.train_values, data.test_values)")
        both = {v.casefold() for v in self.train} & {v.casefold() for v in self.test}
        if both:
            raise UserError(f"the split on column {self.column!r} has {sorted(both)} among both its train and its "
                            "test values")

    @classmethod
    def on_column(cls, column: str, train: Sequence[str] = (), test: Sequence[str] = ()) -> SplitRule:
        return cls(column=column, train=tuple(str(v).strip() for v in train),
                   test=tuple(str(v).strip() for v in test))

    @classmethod
    def stratified(cls, test_fraction: float, seed: int) -> SplitRule:
        return cls(column=None, test_fraction=float(test_fraction), seed=int(seed))

    @property
    def seeded(self) -> bool:
        return self.column is None

    @property
    def _parity(self) -> bool:
        return self.column is not None and self.train == ("even",) and self.test == ("odd",)

    def assign(self, table: pd.DataFrame, labels: np.ndarray | None = None) -> np.ndarray:
        """int8 [len(table)]: :data:`TRAIN`, :data:`TEST` or :data:`NEITHER` for every row. ``labels`` (int64,
        -1 for an unlabelled row, which is in neither split) is what a stratified split stratifies by."""
        out = np.zeros(len(table), dtype=np.int8)
        if self.column is None:
            if labels is None:
                raise ValueError("a stratified split needs the labels of the rows")
            labels = np.asarray(labels, dtype=np.int64)
            train, test = stratified_split(labels, self.test_fraction, derive_seed(self.seed, "test split"),
                                           indices=np.flatnonzero(labels >= 0))
            out[train], out[test] = TRAIN, TEST
            return out
        if self.column not in table.columns:
            shown = ", ".join(c for c in table.columns if c not in ("id", "path", "name"))
            raise UserError(f"the split column {self.column!r} is not in the data; its columns: {shown} "
                            "(benchmark config: data.split_key)")
        col = table[self.column]
        if self._parity and pd.api.types.is_integer_dtype(col.dtype):
            # The Kaggle rule on its integer year, exactly as it always read: NA in neither split.
            has = col.notna().to_numpy()
            even = has & (col.fillna(1).to_numpy(np.int64) % 2 == 0)
            out[even], out[has & ~even] = TRAIN, TEST
            return out
        text = col.astype("string").str.strip()
        blank = (text.isna() | (text == "")).to_numpy()
        is_train = self._matches(col, text, self.train)
        is_test = self._matches(col, text, self.test)
        if not self.train:
            is_train = ~blank & ~is_test & ~self._unmatched_parity(col, self.test)
        if not self.test:
            is_test = ~blank & ~is_train & ~self._unmatched_parity(col, self.train)
        clash = is_train & is_test
        if clash.any():
            raise UserError(f"split column {self.column!r}: value {text.iloc[int(np.flatnonzero(clash)[0])]!r} "
                            "matches both a train and a test value")
        out[is_train & ~blank], out[is_test & ~blank] = TRAIN, TEST
        return out

    @staticmethod
    def _numbers(col: pd.Series) -> pd.Series:
        num = pd.to_numeric(col.astype("string").str.strip(), errors="coerce").astype("Float64")
        return num.where(num.notna() & (num == num.round()))

    def _matches(self, col: pd.Series, text: pd.Series, values: Sequence[str]) -> np.ndarray:
        hit = np.zeros(len(col), dtype=bool)
        folded = text.str.casefold()
        for v in values:
            if v in PARITY:
                num = self._numbers(col)
                hit |= (num.notna() & ((num % 2) == (0 if v == "even" else 1))).fillna(False).to_numpy(bool)
            else:
                hit |= (folded == v.casefold()).fillna(False).to_numpy(bool)
        return hit

    def _unmatched_parity(self, col: pd.Series, values: Sequence[str]) -> np.ndarray:
        """Rows that a parity rule cannot read (not an integer): with ``values`` by parity, the complement
        side must not take them either."""
        if not any(v in PARITY for v in values):
            return np.zeros(len(col), dtype=bool)
        return self._numbers(col).isna().to_numpy(bool)

    # --- words for messages and reports -----------------------------------------------------------------
    def describe(self) -> str:
        """One line for reports, e.g. "train = even years, test = odd years"."""
        if self.column is None:
            return (f"seeded stratified split: {self.test_fraction:g} of each class's images to test, the rest "
                    f"to train (seed {self.seed})")
        if self._parity:
            return f"train = even {self.column}s, test = odd {self.column}s"
        train = f"{self.column} {_side(self.train)}" if self.train else f"any other {self.column}"
        test = f"{self.column} {_side(self.test)}" if self.test else f"any other {self.column}"
        return f"train = {train}, test = {test}"

    def train_words(self) -> str:
        """What qualifies "train images" in a message: "(even-year) " for the Kaggle rule, else ""."""
        return f"(even-{self.column}) " if self._parity else ""

    def test_only_reason(self, n_test: int) -> str:
        where = f"test (odd) {self.column}s" if self._parity else "test"
        return f"only in {where}: 0 train, {n_test} test images"

    def neither_reason(self) -> str:
        if self._parity:
            return f"every image has no {self.column}"
        if self.column is None:
            return "every image is unlabelled"
        return f"every image's {self.column} is blank or neither a train nor a test value"

    def to_dict(self) -> dict[str, object]:
        out = {"rule": self.describe()}
        if self.column is None:
            out.update(kind="stratified", test_fraction=self.test_fraction, seed=self.seed)
        else:
            out.update(kind="column", column=self.column, train=list(self.train), test=list(self.test))
        return out


KAGGLE_SPLIT = SplitRule.on_column("year", train=("even",), test=("odd",))


def read_class_file(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines and lines starting with ``#`` skipped), in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise UserError(f"{path}: cannot read the class list ({err.strerror}); data.background_classes and "
                        "data.evaluation_classes name text files with one class per line") from None
    names = tuple(s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#"))
    if not names:
        raise UserError(f"{path}: the class list is empty; write one class name per line")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UserError(f"{path}: class {n!r} is listed twice")
        seen.add(n)
    return names


@dataclass(frozen=True)
class ClassSplit:
    """The episodic protocol's background (training) and evaluation classes.

    Lists: ``background`` and ``evaluation`` (None for one of them: every other class of the data). Or,
    both None, a seeded split: of the classes with at least ``min_images`` images, ``background_fraction``
    (rounded; at least one class on each side when there are two or more) go to background, drawn from the
    stream "episodic classes" of ``seed`` over the sorted class names; the rest to evaluation. ``source`` says where lists came from.
    """

    background: tuple[str, ...] | None = None
    evaluation: tuple[str, ...] | None = None
    background_fraction: float = 0.6
    seed: int = 0
    source: str = "seeded"

    def __post_init__(self) -> None:
        if self.seeded and not 0.0 < self.background_fraction < 1.0:
            raise UserError(f"background_fraction={self.background_fraction} must lie in (0, 1) (benchmark "
                            "config: data.background_fraction)")
        if self.background is not None and self.evaluation is not None:
            overlap = set(self.background) & set(self.evaluation)
            if overlap:
                raise ValueError(f"classes in both background and evaluation lists: {sorted(overlap)}")

    @property
    def seeded(self) -> bool:
        return self.background is None and self.evaluation is None

    @classmethod
    def lists(cls, background: Sequence[str] | None, evaluation: Sequence[str] | None,
              source: str = "given lists") -> ClassSplit:
        if background is None and evaluation is None:
            raise ValueError("give at least one class list")
        return cls(background=None if background is None else tuple(background),
                   evaluation=None if evaluation is None else tuple(evaluation), source=source)

    @classmethod
    def from_files(cls, background: str | Path | None, evaluation: str | Path | None) -> ClassSplit:
        files = [f"{role} {p}" for role, p in (("background", background), ("evaluation", evaluation)) if p]
        return cls.lists(read_class_file(background) if background else None,
                         read_class_file(evaluation) if evaluation else None, source="files: " + ", ".join(files))

    @classmethod
    def fraction(cls, background_fraction: float, seed: int) -> ClassSplit:
        return cls(background_fraction=float(background_fraction), seed=int(seed))

    def resolve(self, counts: pd.Series, min_images: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(background, evaluation) lists for classes with image ``counts`` (class -> n): the lists as given
        (one left None: every other class of ``counts``), or the seeded split of the classes with at least
        ``min_images`` images."""
        present = sorted(str(c) for c in counts.index)
        if not self.seeded:
            background = self.background if self.background is not None else \
                tuple(c for c in present if c not in set(self.evaluation or ()))
            evaluation = self.evaluation if self.evaluation is not None else \
                tuple(c for c in present if c not in set(background))
            return tuple(background), tuple(evaluation)
        eligible = [c for c in present if int(counts.get(c, 0)) >= min_images]
        n = len(eligible)
        n_bg = n if n < 2 else min(n - 1, max(1, int(np.floor(self.background_fraction * n + 0.5))))
        order = np.random.default_rng(derive_seed(self.seed, "episodic classes")).permutation(n)
        chosen = set(order[:n_bg].tolist())
        return (tuple(c for i, c in enumerate(eligible) if i in chosen),
                tuple(c for i, c in enumerate(eligible) if i not in chosen))

    def describe(self) -> str:
        if self.seeded:
            return (f"seeded split of the classes with >= min_images images: {self.background_fraction:g} of them "
                    f"to background, the rest to evaluation (seed {self.seed})")
        return f"class lists ({self.source})"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"rule": self.describe()}
        if self.seeded:
            out.update(kind="fraction", background_fraction=self.background_fraction, seed=self.seed)
        else:
            out.update(kind="lists", source=self.source)
        return out
