"""What a phase's episodes need of the data, as data, and the largest episode sizes the data can hold.

Pure functions on class counts (no image is read): an :class:`EpisodeNeed` is what an episode sampler of the
run will be built on (its pool of classes and item counts, and the config keys of its way, shot and query),
:meth:`EpisodeNeed.fit` the largest settings that pool holds, and :meth:`EpisodeNeed.problem` the one line that
says what is wrong. Registered embeddings declare theirs (``Embedding.needs``, computed from the same rows their
trainer uses); :mod:`benchmarks.protocols.feasibility` adds the protocols' own and settles a run's config.

Two kinds of sampler, as the code builds them (:mod:`fewshot.sampling`): training and validation episodes
leave out classes with fewer than ``shot + query`` items (``small_classes="exclude"``) and need ``way`` of the
others; evaluation episodes (``every_class``) stop on such a class, so every class of the pool needs
``max(shots) + query`` items, and there must be ``max(ways)`` classes.
"""
from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOOR = {"way": 2, "shot": 1, "query": 1}  # 1-way episodes measure nothing; an episode needs a shot and a query


def fmt(value: Any) -> str:
    """A setting's value as an override writes it: ``5``, ``[2, 5]``, ``["a", "b"]``, ``0.2``."""
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return json.dumps(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Setting:
    """A config key and its value in the config being checked (an int, or a tuple of ints for ``ways``)."""

    key: str
    value: Any


class ClassCounter:
    """Item counts per class name of dataset rows: ``labels`` int64 [N] index ``classes``; ``groups``: the run's
    validation groups [N] (None: a stratified rule), for the splits a phase carves before it samples."""

    def __init__(self, labels: np.ndarray, classes: Sequence[str], groups: np.ndarray | None = None) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = tuple(classes)
        self.groups = groups

    def counts(self, rows: np.ndarray) -> dict[str, int]:
        """{class: items among ``rows``}, for the classes that have any."""
        found = np.bincount(self.labels[np.asarray(rows, dtype=np.int64)], minlength=len(self.classes))
        return {self.classes[i]: int(found[i]) for i in np.flatnonzero(found)}


@dataclass(frozen=True)
class EpisodeNeed:
    """Episodes of ``way`` classes, each with ``shot + query`` distinct items, from the classes of ``counts``
    (class -> items of the pool). ``what`` names the episodes and their phase, ``pool`` the rows they come from
    (both in words). ``every_class``: the evaluation's sampler, which stops on a class with too few items, with
    tuples of ways and shots (every combination is run); its ``pool`` is a plural noun ("evaluation classes
    (with >= data.min_images=20 images)"), the others' a phrase after "among"."""

    what: str
    pool: str
    counts: Mapping[str, int]
    way: Setting
    shot: Setting
    query: Setting
    every_class: bool = False
    _sizes: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sizes", sorted(self.counts.values()))

    @property
    def settings(self) -> tuple[Setting, Setting, Setting]:
        return self.way, self.shot, self.query

    def _with_at_least(self, k: int) -> int:
        return len(self._sizes) - bisect.bisect_left(self._sizes, k)

    @property
    def met(self) -> bool:
        return self.fit(frozenset(self.keys())) == {}

    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings)

    def fit(self, pinned: Iterable[str] = ()) -> dict[str, Any] | None:
        """The settings to change so that the pool holds the episodes ({} when it does already; None when no
        setting at or above the floors, 2-way 1-shot 1-query, does): the largest way the pool allows, then
        the largest shot for that way, then the largest query. Keys in ``pinned`` keep their value."""
        pinned = set(pinned)
        if self.every_class:
            return self._fit_every_class(pinned)
        way, shot, query = (s.value for s in self.settings)
        for w in _ladder(way, "way", self.way.key in pinned):
            for s in _ladder(shot, "shot", self.shot.key in pinned):
                for q in _ladder(query, "query", self.query.key in pinned):
                    if self._with_at_least(s + q) >= w:
                        return _changes(self.settings, (w, s, q))
        return None

    def _fit_every_class(self, pinned: set[str]) -> dict[str, Any] | None:
        ways, shots, query = tuple(self.way.value), tuple(self.shot.value), self.query.value
        n = len(self._sizes)
        fewest = self._sizes[0] if n else 0
        if n < FLOOR["way"] or (self.way.key in pinned and max(ways) > n):
            return None
        new_ways = tuple(sorted({min(w, n) for w in ways}))
        for top in _ladder(max(shots), "shot", self.shot.key in pinned):
            for q in _ladder(query, "query", self.query.key in pinned):
                if fewest >= top + q:
                    return _changes(self.settings, (new_ways, tuple(sorted({min(s, top) for s in shots})), q))
        return None

    def lead(self, fix: Mapping[str, Any] | None) -> Setting:
        """The setting a problem line starts with: the first one ``fix`` changes, else the way."""
        return next((s for s in self.settings if fix and s.key in fix), self.way)

    def problem(self, fix: Mapping[str, Any] | None) -> str:
        """One line: the setting :meth:`lead` and its value, what the pool lacks (:meth:`lacks`), and ``fix``
        (None: no episode size fits; the caller says what to leave out)."""
        lead = self.lead(fix)
        return f"{lead.key}={fmt(lead.value)}: {self.lacks()}" + (f"; {would_work(fix)}" if fix else "")

    def lacks(self) -> str:
        """What the pool lacks for these episodes, in words (with its largest classes)."""
        way, shot, query = (s.value for s in self.settings)
        if self.every_class:
            n, top = len(self._sizes), max(shot)
            parts = []
            if max(way) > n:
                parts.append(f"the data has {n} {self.pool}, fewer than {max(way)}-way {self.what} need")
            short = {c: k for c, k in self.counts.items() if k < top + query}
            if short:
                parts.append(f"{self.what} need >= {top + query} images (max shot {top} + "
                             f"{_n(query, 'query', 'queries')}) of every "
                             f"one of the {n} {self.pool}, and {len(short)} {'has' if len(short) == 1 else 'have'} "
                             f"fewer ({_largest(short)})")
            return "; ".join(parts)
        enough = self._with_at_least(shot + query)
        return (f"{self.what} need {way} classes with >= {shot + query} images ({_n(shot, 'shot')} + "
                f"{_n(query, 'query', 'queries')}) "
                f"among {self.pool}; {enough} {'has' if enough == 1 else 'have'} that many "
                f"({_largest(self.counts) or 'the pool is empty'})")


def _n(k: int, one: str, many: str = "") -> str:
    return f"{k} {one if k == 1 else many or one + 's'}"


def change_words(entry: Mapping[str, Any]) -> str:
    """An entry of run.json's ``fitted`` in words: ``"evaluation.ways [2, 5] -> [2, 4]"``, or for a list of
    methods or protocols what was left out: ``"methods: left out text, fusion_gate"``."""
    if entry["key"] in ("methods", "protocols"):
        gone = [v for v in entry["from"] if v not in entry["to"]]
        return f"{entry['key']}: left out {', '.join(gone)}"
    return f"{entry['key']} {fmt(entry['from'])} -> {fmt(entry['to'])}"


def would_work(fix: Mapping[str, Any]) -> str:
    """``"protonet.episodes.n_way=3 and protonet.episodes.n_query=4 would work"``."""
    return " and ".join(f"{k}={fmt(v)}" for k, v in fix.items()) + " would work"


def _ladder(value: int, kind: str, pinned: bool) -> range | list[int]:
    """The values to try, largest first: the value itself when pinned, else down to the floor."""
    return [value] if pinned else range(value, FLOOR[kind] - 1, -1)


def _changes(settings: Sequence[Setting], values: Sequence[Any]) -> dict[str, Any]:
    return {s.key: v for s, v in zip(settings, values) if _plain(v) != _plain(s.value)}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


def _largest(counts: Mapping[str, int], n: int = 4) -> str:
    """``"Belts 14, Caps 16"``: up to ``n`` classes, the largest first, then "and K more"."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{c} {k}" for c, k in ranked[:n])
    return shown + (f" and {len(ranked) - n} more" if len(ranked) > n else "")


@dataclass(frozen=True)
class Adjustment:
    """A setting changed to fit the data: its key, the configured and the used value, and why."""

    key: str
    configured: Any
    used: Any
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "from": _plain(self.configured), "to": _plain(self.used), "why": self.why}


def merge_adjustments(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """run.json's ``fitted`` list: one entry per key, in first-change order (``from``: the first configured
    value, ``to``: the last used one, ``why``: every reason, in order), from entries of :meth:`Adjustment.to_dict`
    (a resumed run's earlier ones first); ``methods`` and ``protocols`` keep one entry per change, each with
    what it left out and why."""
    merged: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(records):
        if r["key"] in ("methods", "protocols"):
            merged[f"{r['key']} {i}"] = dict(r)
        elif r["key"] in merged:
            m = merged[r["key"]]
            m["to"] = r["to"]
            if r["why"] not in m["why"].split(" | "):
                m["why"] = f"{m['why']} | {r['why']}"
        else:
            merged[r["key"]] = dict(r)
    return list(merged.values())
