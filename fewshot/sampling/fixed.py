"""Fixed-shape episodes: n_way classes, n_shot support and n_query query items per class."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from fewshot.sampling._classes import as_label_array, build_class_index, refuse_negative_labels
from fewshot.sampling._random import floyd_choose, random_order, uniforms
from fewshot.sampling.base import BaseEpisodeSampler, check_positive
from fewshot.sampling.episode import EpisodeCollate

# Counter streams of one episode; fixed forever, since changing them changes every seeded episode.
_CLASS_PICK, _CLASS_ORDER, _ITEM_PICK, _ITEM_ORDER = 0, 1, 2, 3


class EpisodeSampler(BaseEpisodeSampler):
    """Uniform N-way K-shot Q-query episodes over the labels of a dataset.

    Each episode picks ``n_way`` distinct eligible classes uniformly at random, in random order, then
    ``n_shot + n_query`` distinct items of each class uniformly at random, randomly split into support and
    query. Usable as ``DataLoader(ds, batch_sampler=sampler, collate_fn=sampler.collate)``.

    Args:
        labels: one int label >= 0 per dataset item ([n]), e.g. ``ImageFolder.targets``. A negative label
            (e.g. -1 for "unlabelled") raises ``ValueError`` rather than becoming a class; to leave such
            items out, build the sampler on the labelled subset:
            ``keep = np.flatnonzero(labels >= 0)``, ``sampler = EpisodeSampler(labels[keep], ...)`` and
            ``DataLoader(torch.utils.data.Subset(dataset, keep), batch_sampler=sampler, ...)``: the
            sampler's indices are positions in ``keep``, which ``Subset`` maps back to the dataset.
        n_way, n_shot, n_query: episode shape; n_episodes: ``len(self)``.
        seed: any non-negative int; ``None`` draws one (kept in ``self.seed``).
        classes: restrict sampling to these labels.
        small_classes: ``"error"`` (default) raises on a class with fewer than ``n_shot + n_query`` items;
            ``"exclude"`` drops such classes and lists them in ``self.excluded_classes`` (label -> count).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        n_way: int,
        n_shot: int,
        n_query: int,
        n_episodes: int,
        *,
        seed: int | None = None,
        classes: Iterable[int] | None = None,
        small_classes: str = "error",
    ) -> None:
        check_positive(n_way=n_way, n_shot=n_shot, n_query=n_query)
        super().__init__(n_episodes, seed)
        self.labels = as_label_array(labels)
        refuse_negative_labels(self.labels, "EpisodeSampler")
        self.n_way, self.n_shot, self.n_query = int(n_way), int(n_shot), int(n_query)
        need = self.n_shot + self.n_query
        self._index = build_class_index(self.labels, need, f"n_shot + n_query = {need}", classes, small_classes)
        n_classes = len(self._index.classes)
        if self.n_way > n_classes:
            dropped = f" ({len(self._index.excluded)} more were too small)" if self._index.excluded else ""
            raise ValueError(
                f"n_way={self.n_way} but only {n_classes} classes have at least {need} items{dropped}; "
                f"lower n_way to at most {n_classes} or lower n_shot/n_query"
            )

    @property
    def collate(self) -> EpisodeCollate:
        return EpisodeCollate(self.n_way, self.n_shot, self.n_query)

    def sample_batch(self, start: int, count: int) -> np.ndarray:
        """Dataset indices of global episodes ``start .. start + count - 1``, vectorised over episodes.

        Returns int64 [count, n_way, n_shot + n_query]: per way the support items then the query items.
        ``sample_batch(i, 1)[0]`` is episode ``i`` whatever else was sampled, and iterating the sampler
        yields the same episodes (flattened support-first).
        """
        self._check_range(start, count)
        episodes = np.arange(start, start + count, dtype=np.uint64)
        way, k, index = self.n_way, self.n_shot + self.n_query, self._index
        pick = floyd_choose(uniforms(self._key, episodes, _CLASS_PICK, way), len(index.classes), way)
        pick = np.take_along_axis(pick, random_order(self._key, episodes, _CLASS_ORDER, (way,)), axis=1)
        u = uniforms(self._key, episodes, _ITEM_PICK, way * k).reshape(count, way, k)
        items = floyd_choose(u, index.counts[pick], k)
        # Floyd's picks come in a biased order (late steps favour high positions): shuffle before the
        # support/query split.
        items = np.take_along_axis(items, random_order(self._key, episodes, _ITEM_ORDER, (way, k)), axis=2)
        return index.gather(pick[..., None], items)

    def index_lists(self, start: int, count: int) -> list[list[int]]:
        batch = self.sample_batch(start, count)
        flat = np.concatenate(
            [batch[:, :, : self.n_shot].reshape(count, -1), batch[:, :, self.n_shot :].reshape(count, -1)], axis=1
        )
        return flat.tolist()

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler({len(self.labels)} items, {len(self.classes)} classes, n_way={self.n_way}, "
            f"n_shot={self.n_shot}, n_query={self.n_query}, n_episodes={self.n_episodes}, seed={self.seed})"
        )
