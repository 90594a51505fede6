"""Variable-way, variable-shot episodes following Meta-Dataset's sampling rule."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from fewshot.sampling._classes import as_label_array, build_class_index, refuse_negative_labels
from fewshot.sampling._random import floyd_choose, philox_words, random_order, uniforms
from fewshot.sampling.base import BaseEpisodeSampler, check_positive
from fewshot.sampling.episode import EpisodeCollate

# Counter streams of one episode; fixed forever, since changing them changes every seeded episode.
_WAYS, _CLASS_PICK, _CLASS_ORDER, _BETA, _ALPHA, _ITEM_KEYS = 0, 1, 2, 3, 4, 5


class VariableEpisode(NamedTuple):
    """Dataset indices of one imbalanced episode: support [sum(n_support)] and query [n_way * n_query],
    each class by class in the order of ``class_ids`` [n_way]; ``n_support`` [n_way] shots per class."""

    support: np.ndarray
    query: np.ndarray
    class_ids: np.ndarray
    n_support: np.ndarray
    n_query: int


class VariableEpisodeSampler(BaseEpisodeSampler):
    """Imbalanced episodes as in Meta-Dataset (Triantafillou et al. 2020, "Meta-Dataset: A Dataset of
    Datasets for Learning to Learn from Few Examples", section 3.2).

    Per episode: ways N ~ U[min_ways, min(max_ways, C)]; N distinct classes uniformly at random; queries
    per class q = min(max_query, min_c floor(n_c / 2)); support size S = min(max_support,
    sum_c floor(beta * min(max_support_per_class, n_c - q)) + 1) with beta ~ U(0, 1]; shots
    k_c = min(floor(R_c * (S - N)) + 1, n_c - q) with R_c proportional to n_c * exp(alpha_c),
    alpha_c ~ U[log 0.5, log 2). Every class needs >= 2 items; ``small_classes`` handles the others.
    ``labels`` [n] must be ints >= 0: a negative one (e.g. -1 for "unlabelled") raises ``ValueError``; build
    the sampler on ``labels[keep]`` with ``torch.utils.data.Subset(dataset, keep)`` to leave such items out
    (as :class:`fewshot.sampling.fixed.EpisodeSampler` explains).
    Seeding, iteration layout and ``collate`` are those of :class:`BaseEpisodeSampler`. Drawing an episode
    costs O(sum of its classes' sizes) (one random key per item of the chosen classes).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        n_episodes: int,
        *,
        seed: int | None = None,
        classes: Iterable[int] | None = None,
        small_classes: str = "error",
        min_ways: int = 5,
        max_ways: int = 50,
        max_query: int = 10,
        max_support: int = 500,
        max_support_per_class: int = 100,
    ) -> None:
        check_positive(min_ways=min_ways, max_ways=max_ways, max_query=max_query, max_support=max_support,
                       max_support_per_class=max_support_per_class)
        if not min_ways <= max_ways <= max_support:
            raise ValueError(f"need min_ways <= max_ways <= max_support, got {min_ways}, {max_ways}, {max_support}")
        super().__init__(n_episodes, seed)
        self.labels = as_label_array(labels)
        refuse_negative_labels(self.labels, "VariableEpisodeSampler")
        self._index = build_class_index(self.labels, 2, "2 (one support and one query)", classes, small_classes)
        if len(self._index.classes) < min_ways:
            raise ValueError(
                f"min_ways={min_ways} but only {len(self._index.classes)} classes have at least 2 items; "
                "lower min_ways or add classes"
            )
        self.min_ways, self.max_ways = int(min_ways), int(min(max_ways, len(self._index.classes)))
        self.max_query, self.max_support, self.max_support_per_class = max_query, max_support, max_support_per_class

    @property
    def collate(self) -> EpisodeCollate:
        return EpisodeCollate()

    def episode(self, i: int) -> VariableEpisode:
        """Global episode ``i``: a pure function of (seed, i)."""
        self._check_range(i, 1)
        key, ep, index = self._key, np.array([i], dtype=np.uint64), self._index
        u_way = uniforms(key, ep, _WAYS, 1)[0, 0]
        spread = self.max_ways - self.min_ways
        way = self.min_ways + min(int(u_way * (spread + 1)), spread)
        pick = floyd_choose(uniforms(key, ep, _CLASS_PICK, way), len(index.classes), way)
        pick = pick[0, random_order(key, ep, _CLASS_ORDER, (way,))[0]]
        n = index.counts[pick]
        q = int(min(self.max_query, (n // 2).min()))
        beta = 1.0 - uniforms(key, ep, _BETA, 1)[0, 0]  # (0, 1]
        per_class = np.floor(beta * np.minimum(self.max_support_per_class, n - q)) + 1
        support_size = min(self.max_support, int(per_class.sum()))
        alpha = math.log(0.5) + uniforms(key, ep, _ALPHA, way)[0] * math.log(4.0)
        share = n * np.exp(alpha)
        shots = np.minimum(np.floor(share / share.sum() * (support_size - way)).astype(np.int64) + 1, n - q)
        items = self._random_items(ep, pick, n, shots + q)
        support = np.concatenate([chosen[:k] for chosen, k in zip(items, shots)])
        query = np.concatenate([chosen[k:] for chosen, k in zip(items, shots)])
        return VariableEpisode(support, query, index.classes[pick], shots, q)

    def _random_items(self, ep: np.ndarray, pick: np.ndarray, n: np.ndarray, take: np.ndarray) -> list[np.ndarray]:
        """``take[c]`` distinct random items of each picked class, in random order (sort by random keys)."""
        offsets = np.concatenate([[0], np.cumsum(n)])
        words = philox_words(self._key, ep, _ITEM_KEYS, int(offsets[-1]))[0].astype(np.uint64)
        out = []
        for c, (cls, m) in enumerate(zip(pick, take)):
            keys = (words[offsets[c] : offsets[c + 1]] << np.uint64(32)) | np.arange(n[c], dtype=np.uint64)
            out.append(self._index.gather(cls, np.argsort(keys, kind="quicksort")[:m]))
        return out

    def index_lists(self, start: int, count: int) -> list[list[int]]:
        out = []
        for i in range(start, start + count):
            e = self.episode(i)
            out.append(np.concatenate([e.support, e.query]).tolist())
        return out
