"""The base of the episodic samplers: seeding, length, epochs and iteration in vectorised chunks."""
from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from fewshot.sampling._classes import ClassIndex
from fewshot.sampling._random import seed_to_key
from fewshot.sampling.episode import EpisodeCollate


def check_positive(**sizes: object) -> None:
    """Raise ``ValueError`` naming the first argument that is not an int >= 1."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


class BaseEpisodeSampler(Sampler[list[int]], ABC):
    """A ``batch_sampler`` whose batches are few-shot episodes.

    Episode ``i`` is a pure function of ``(seed, i)``: every draw comes from a counter-based generator
    keyed on the seed with the episode index in the counter (see :mod:`fewshot.sampling._random`), so the
    same episodes come out in any iteration order and in any DataLoader worker. With ``seed=None`` a seed
    is drawn once from OS entropy and kept in ``self.seed``, so even an unseeded sampler repeats itself.

    Iterating yields ``len(self)`` index lists, each laid out support first then query, class by class.
    Epoch ``e`` (see :meth:`set_epoch`) yields the global episodes ``e * n_episodes + i``.
    """

    # Episodes drawn per vectorised call while iterating: large enough to amortise numpy's per-call
    # overhead, small enough that the first episode comes out at once.
    chunk_episodes = 256
    _index: ClassIndex  # set by subclasses: the eligible classes and their items

    def __init__(self, n_episodes: int, seed: int | None) -> None:
        super().__init__()
        check_positive(n_episodes=n_episodes)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.seed = int(seed)
        self.n_episodes = int(n_episodes)
        self.epoch = 0
        self._key = seed_to_key(self.seed)

    @property
    def classes(self) -> np.ndarray:
        """Eligible labels (enough items for an episode), ascending."""
        return self._index.classes

    @property
    def excluded_classes(self) -> dict[int, int]:
        """Labels dropped by ``small_classes="exclude"`` -> their item count."""
        return dict(self._index.excluded)

    def __len__(self) -> int:
        return self.n_episodes

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield episodes ``epoch * n_episodes`` onwards (fresh episodes per epoch)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        first = self.epoch * self.n_episodes
        for start in range(0, self.n_episodes, self.chunk_episodes):
            yield from self.index_lists(first + start, min(self.chunk_episodes, self.n_episodes - start))

    @abstractmethod
    def index_lists(self, start: int, count: int) -> list[list[int]]:
        """The flat index lists of global episodes ``start .. start + count - 1``, in iteration layout."""

    @property
    @abstractmethod
    def collate(self) -> EpisodeCollate:
        """A collate function that turns one of this sampler's batches into an :class:`Episode`."""

    @staticmethod
    def _check_range(start: int, count: int) -> None:
        check_positive(count=count)
        if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
            raise ValueError(f"start must be a non-negative episode index, got {start!r}")
