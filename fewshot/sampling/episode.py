"""The ``Episode`` type and the collate function that builds one from a sampler's batch."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import default_collate


class Episode(NamedTuple):
    """One few-shot task.

    support_x: [n_support, ...]; support_y: [n_support] int64 in 0..n_way-1;
    query_x: [n_query_total, ...]; query_y: [n_query_total] int64 in 0..n_way-1;
    class_ids: [n_way] int64, the original label of each way (``class_ids[support_y]`` are the labels).
    Items are grouped class by class in way order.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    class_ids: torch.Tensor


class EpisodeCollate:
    """``collate_fn`` for a DataLoader driven by an episodic ``batch_sampler``.

    Accepts a list of ``(x, y)`` items or an ``(X [n, ...], Y [n])`` pair (what a dataset's ``__getitems__``
    may return). The batch must be in sampler layout: support class by class, then query class by class,
    each class's queries equally many. The split point is read from the labels (the first label that comes
    back after its run ended starts the query), so variable-shot episodes need no extra information; the
    optional sizes are checked, and a 1-way episode (one single run of labels) needs ``n_shot`` or ``n_query``.
    """

    def __init__(self, n_way: int | None = None, n_shot: int | None = None, n_query: int | None = None) -> None:
        self.n_way, self.n_shot, self.n_query = n_way, n_shot, n_query
        self._fixed = None not in (n_way, n_shot, n_query)
        if self._fixed:
            self._support_y = torch.arange(n_way).repeat_interleave(n_shot)
            self._query_y = torch.arange(n_way).repeat_interleave(n_query)

    def __repr__(self) -> str:
        return f"EpisodeCollate(n_way={self.n_way}, n_shot={self.n_shot}, n_query={self.n_query})"

    def __call__(self, batch: Sequence[Any]) -> Episode:
        x, y = split_batch(batch)
        if self._fixed:
            episode = self._fixed_layout(x, y)
            if episode is not None:
                return episode
        n_support, class_ids = self._layout(y)
        # Labels within a run are equal and ways are distinct, so way = position of the label in class_ids.
        way_of = (y[:, None] == class_ids[None, :]).to(torch.int64).argmax(dim=1)
        return Episode(x[:n_support], way_of[:n_support], x[n_support:], way_of[n_support:], class_ids)

    def _fixed_layout(self, x: torch.Tensor, y: torch.Tensor) -> Episode | None:
        """The known N-way K-shot Q-query layout, checked against the labels; None if they disagree
        (the general path then explains what is wrong)."""
        n_support = self.n_way * self.n_shot
        if len(y) != self.n_way * (self.n_shot + self.n_query):
            return None
        labels = y.cpu().numpy()  # numpy: a few small checks cost microseconds instead of tens
        class_ids = labels[0:n_support : self.n_shot]
        if not (
            (labels[:n_support].reshape(self.n_way, self.n_shot) == class_ids[:, None]).all()
            and (labels[n_support:].reshape(self.n_way, self.n_query) == class_ids[:, None]).all()
        ):
            return None
        support_y, query_y = self._support_y.clone(), self._query_y.clone()
        return Episode(x[:n_support], support_y, x[n_support:], query_y, torch.from_numpy(class_ids.copy()))

    def _layout(self, y: torch.Tensor) -> tuple[int, torch.Tensor]:
        values, lengths = torch.unique_consecutive(y, return_counts=True)
        runs = len(values)
        if runs == 1:  # a 1-way episode: support and query of the one class form a single run
            n_query = self.n_query if self.n_query is not None else (
                len(y) - self.n_shot if self.n_shot is not None else None)
            if n_query is None or not 0 < n_query < len(y):
                raise ValueError(
                    f"cannot split a batch of {len(y)} items of the single label {int(values[0])} into support "
                    "and query; build EpisodeCollate(n_shot=..., n_query=...) (sampler.collate does)"
                )
            n_support, class_ids = len(y) - n_query, values
        else:
            way = runs // 2
            q = lengths[way:]
            if runs % 2 or not torch.equal(values[:way], values[way:]) or bool((q != q[0]).any()):
                raise ValueError(
                    f"batch labels are not in episode layout (support class by class, then the same classes' "
                    f"queries, equally many each): label runs {values.tolist()} of lengths {lengths.tolist()}; "
                    "use an episodic sampler as batch_sampler over a dataset whose labels it was built from"
                )
            n_support, class_ids = int(lengths[:way].sum()), values[:way]
        self._check_sizes(len(y), n_support, len(class_ids))
        return n_support, class_ids

    def _check_sizes(self, total: int, n_support: int, way: int) -> None:
        # Mean shots per way: not an int for a variable-shot episode, so a fixed n_shot then disagrees.
        found = {"n_way": way, "n_shot": n_support / way, "n_query": (total - n_support) / way}
        for name, got in found.items():
            want = getattr(self, name)
            if want is not None and want != got:
                raise ValueError(
                    f"batch has {name}={got:g} ({n_support} support and {total - n_support} query items over "
                    f"{way} ways) but this collate expects {name}={want}; use the sampler's own `.collate`"
                )


def split_batch(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X [n, ...], Y [n] int64)`` from a list of ``(x, y)`` items or from an ``(X, Y)`` pair."""
    if (
        isinstance(batch, (tuple, list)) and len(batch) == 2
        and isinstance(batch[0], (torch.Tensor, np.ndarray)) and isinstance(batch[1], (torch.Tensor, np.ndarray))
        and batch[1].ndim == 1 and len(batch[0]) == len(batch[1])
    ):
        return torch.as_tensor(batch[0]), torch.as_tensor(batch[1]).to(torch.int64)
    if not isinstance(batch, (tuple, list)) or not batch:
        raise ValueError(f"expected a non-empty list of (x, y) items or an (X, Y) pair, got {type(batch).__name__}")
    if not isinstance(batch[0], (tuple, list)) or len(batch[0]) != 2:
        raise ValueError(
            f"each item must be an (x, y) pair, got {type(batch[0]).__name__}; make the dataset return (x, label)"
        )
    xs, ys = zip(*batch)
    x = torch.stack(xs) if isinstance(xs[0], torch.Tensor) else default_collate(list(xs))
    return x, torch.as_tensor([int(v) for v in ys], dtype=torch.int64)


collate_episode = EpisodeCollate()
"""Collate for any episodic sampler's batches with 2 or more ways (shape read from the labels)."""
