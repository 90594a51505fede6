"""Serve :class:`~fewshot.sampling.fixed.EpisodeSampler` episodes in learn2learn's task form.

A learn2learn loop draws its tasks as ``X, y = tasks.sample()`` from a ``Taskset`` built with
``[NWays, KShots, LoadData, RemapLabels]``-style transforms: X [n_way * k, ...] the items stacked, y [n_way * k]
int64 in 0..n_way-1, then usually ``partition_task(X, y, shots)``. :class:`L2LTasks` returns the same
``[X, y]`` list from this project's seeded sampler, so switching is one line (learn2learn is not needed here):

    tasks = l2l.data.Taskset(meta_dataset, task_transforms=transforms, num_tasks=-1)     # before
    tasks = L2LTasks(dataset, EpisodeSampler(labels, n_way, n_shot, n_query, n_episodes, seed=0))  # after
    X, y = tasks.sample()                                   # unchanged, as is the rest of the loop
    (xs, ys), (xq, yq) = l2l.data.partition_task(X, y, shots=n_shot)   # = the sampler's support / query

Layout: class by class in way order, each class's ``n_shot`` support items first, then its ``n_query``
queries (FusedNWaysKShots' class-by-class order), so ``partition_task(X, y, shots=n_shot)`` (the first
``shots`` items of each label are support) splits exactly the sampler's support from its queries.

Labels: learn2learn's ``RemapLabels`` (shuffle=True, its default) lists the task's distinct labels, shuffles
the list with the global ``random`` and maps a label to its position in it: a uniformly random bijection of the
task's classes onto 0..n_way-1. Here ``y`` is the way of each item, the position of its class in the episode's
class order, which the sampler draws uniformly at random too: the same mapping, but drawn from the sampler's
seed (episode ``i`` is the same in every run). ``tasks.class_ids(i)`` gives the original labels back.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fewshot.sampling.episode import split_batch
from fewshot.sampling.fixed import EpisodeSampler


class L2LTasks:
    """learn2learn-``Taskset``-like view of an :class:`EpisodeSampler` over ``dataset``.

    Args:
        dataset: the items the sampler's labels describe: a tensor [N, ...] (e.g. cached features, gathered
            in one step) or a map-style dataset whose ``dataset[i]`` is ``(x, label)`` (``__getitems__`` is
            used when present; a learn2learn ``MetaDataset`` works too).
        sampler: the episodes; its ``n_episodes`` is ``len(self)`` and its epoch (``set_epoch``) picks
            which episodes ``__getitem__`` and iteration give.
        check_labels: compare the labels the dataset returns with the sampler's (cheap; catches a sampler
            built on other labels).

    ``sample()`` -> ``[X [W * (S + Q), ...], y [W * (S + Q)] int64]``: the next episode of an endless seeded
    stream (the sampler's global episodes 0, 1, 2...; learn2learn's ``num_tasks=-1``). ``tasks[i]``: episode
    ``i`` of the current epoch; iterating yields them all (``num_tasks=len(sampler)``).
    """

    def __init__(self, dataset: Any, sampler: EpisodeSampler, *, check_labels: bool = True) -> None:
        if not isinstance(sampler, EpisodeSampler):
            raise TypeError(f"sampler must be an EpisodeSampler (fixed N-way K-shot), got {type(sampler).__name__}")
        if len(dataset) != len(sampler.labels):
            raise ValueError(f"dataset has {len(dataset)} items but the sampler was built on {len(sampler.labels)} "
                             "labels; build it on this dataset's labels")
        self.dataset, self.sampler, self.check_labels = dataset, sampler, check_labels
        per_way = sampler.n_shot + sampler.n_query
        self._y = torch.arange(sampler.n_way).repeat_interleave(per_way)  # way of each item, class by class
        self._next = 0  # global index of the episode sample() returns next
        # sample() draws episodes a chunk at a time: one vectorised call costs about as much for 256 episodes
        # as for 1, and episode i is the same whatever chunk it is drawn in.
        self._chunk_start, self._chunk = 0, np.empty((0,), dtype=np.int64)

    def __len__(self) -> int:
        return self.sampler.n_episodes

    def _global(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range for {len(self)} episodes per epoch")
        return self.sampler.epoch * self.sampler.n_episodes + i

    def class_ids(self, i: int) -> torch.Tensor:
        """[n_way] original labels of episode ``i``'s ways (``class_ids[y]`` are the items' labels)."""
        first = self.sampler.sample_batch(self._global(i), 1)[0, :, 0]
        return torch.from_numpy(self.sampler.labels[first].astype(np.int64))

    def load(self, indices: np.ndarray) -> list[torch.Tensor]:
        """``[X, y]`` of one episode's dataset indices [n_way, n_shot + n_query] (a ``sample_batch`` row)."""
        flat = indices.reshape(-1)
        if isinstance(self.dataset, torch.Tensor):
            return [self.dataset[torch.from_numpy(flat)], self._y.clone()]
        getitems = getattr(self.dataset, "__getitems__", None)
        batch = getitems(flat.tolist()) if getitems is not None else [self.dataset[i] for i in flat.tolist()]
        x, labels = split_batch(batch)
        if self.check_labels and not np.array_equal(labels.numpy(), self.sampler.labels[flat]):
            raise ValueError("the dataset's labels differ from the sampler's at the same indices; build the "
                             "EpisodeSampler on this dataset's labels")
        return [x, self._y.clone()]

    def sample(self) -> list[torch.Tensor]:
        """The next task ``[X, y]`` of the seeded stream (``X, y = tasks.sample()``)."""
        if not self._chunk_start <= self._next < self._chunk_start + len(self._chunk):
            self._chunk_start = self._next
            self._chunk = self.sampler.sample_batch(self._next, self.sampler.chunk_episodes)
        indices = self._chunk[self._next - self._chunk_start]
        self._next += 1
        return self.load(indices)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        return self.load(self.sampler.sample_batch(self._global(i), 1)[0])

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        first, total, chunk = self._global(0), len(self), self.sampler.chunk_episodes
        for start in range(0, total, chunk):
            yield from map(self.load, self.sampler.sample_batch(first + start, min(chunk, total - start)))
