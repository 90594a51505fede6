"""Fast episodic evaluation of a nearest-prototype classifier on cached features.

Thousands of episodes per chunk: the sampler draws a chunk's indices in one vectorised call, features
are gathered once per chunk, and prototypes, distances and accuracies are batched tensor operations
(see :mod:`fewshot.evaluation.prototypes` for the maths and its papers).
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from fewshot.evaluation.functional import episodic_accuracy
from fewshot.evaluation.prototypes import DISTANCES, normalize_features, prototype_accuracy
from fewshot.methods.functional import centroid_scores
from fewshot.sampling.fixed import EpisodeSampler
from fewshot.utils.device import resolve_device


@dataclass(frozen=True)
class EpisodicResult:
    """accuracies: [n_episodes] fraction of correct queries per episode; mean and ci95 over them."""

    accuracies: np.ndarray
    mean: float
    ci95: float
    n_way: int
    n_shot: int
    n_query: int

    def summary(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": self.ci95, "n_episodes": len(self.accuracies)}


def episodic_eval(
    features: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    sampler: EpisodeSampler,
    *,
    normalize: str = "none",
    base_mean: torch.Tensor | None = None,
    distance: str = "euclidean",
    chunk_size: int | None = None,
    device: str | torch.device = "auto",
    prefetch: bool = True,
    progress: bool = True,
) -> EpisodicResult:
    """Evaluate the sampler's episodes (those of its current epoch) with a nearest-prototype classifier.

    Args:
        features: [n, d] cached features, one row per item of ``labels``; labels: [n], the ones the sampler
            was built on (checked). normalize / base_mean / distance: see :func:`normalize_features` and
            :func:`prototype_accuracy`. device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        chunk_size: episodes per batched step (default: about 16 MB of gathered features, enough to
            amortise the per-step overhead).
        prefetch: draw the next chunk's indices in a background thread (numpy releases the GIL) while
            torch evaluates the current one; the result is the same either way.
    """
    _check_inputs(features, labels, sampler, distance)
    dev = resolve_device(device)
    feats = normalize_features(features.to(dev), normalize, base_mean)
    way, shot, n_query = sampler.n_way, sampler.n_shot, sampler.n_query
    if chunk_size is None:
        episode_bytes = way * (shot + n_query) * feats.shape[1] * feats.element_size()
        chunk_size = min(4096, max(64, (16 << 20) // episode_bytes))
    total = sampler.n_episodes
    # Reused across chunks: fresh multi-MB tensors per chunk would cost page faults on every step.
    support_buf = feats.new_empty(chunk_size * way * shot, feats.shape[1])
    query_buf = feats.new_empty(chunk_size * way * n_query, feats.shape[1])
    acc = torch.empty(total, dtype=torch.float64)
    chunks = _index_chunks(sampler, chunk_size, prefetch)
    with torch.inference_mode(), tqdm(total=total, desc="episodes", unit="ep", disable=not progress) as bar:
        for start, count, s_idx, q_idx in chunks:
            support = torch.index_select(feats, 0, s_idx.to(dev), out=support_buf[: len(s_idx)])
            query = torch.index_select(feats, 0, q_idx.to(dev), out=query_buf[: len(q_idx)])
            support, query = support.view(count, way, shot, -1), query.view(count, way * n_query, -1)
            acc[start : start + count] = prototype_accuracy(support, query, distance).cpu()
            bar.update(count)
    mean, ci95 = episodic_accuracy(acc)
    return EpisodicResult(acc.numpy(), mean, ci95, way, shot, n_query)


def _check_inputs(
    features: torch.Tensor, labels: np.ndarray | torch.Tensor, sampler: EpisodeSampler, distance: str
) -> np.ndarray:
    """The checks both evaluators share; returns ``labels`` as a numpy array."""
    if not isinstance(sampler, EpisodeSampler):
        raise ValueError(f"episodic evaluation needs a fixed-shape EpisodeSampler, got {type(sampler).__name__}")
    if features.ndim != 2 or features.shape[0] != len(sampler.labels):
        raise ValueError(
            f"features must be [{len(sampler.labels)}, d] (one row per label), got {tuple(features.shape)}"
        )
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if not np.array_equal(labels, sampler.labels):
        raise ValueError("labels differ from the labels the sampler was built on; build the sampler on these labels")
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {DISTANCES}")
    return labels


def _index_chunks(
    sampler: EpisodeSampler, chunk_size: int, prefetch: bool
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(start, count, support indices [count*W*S], query indices [count*W*Q]) per chunk of the current epoch."""
    first, total, shot = sampler.epoch * sampler.n_episodes, sampler.n_episodes, sampler.n_shot

    def make(start: int) -> tuple[int, int, torch.Tensor, torch.Tensor]:
        count = min(chunk_size, total - start)
        idx = sampler.sample_batch(first + start, count)
        # Support and query apart, so that each is gathered contiguous in the layout the maths wants.
        s_idx, q_idx = (
            torch.from_numpy(np.ascontiguousarray(part).reshape(-1)) for part in (idx[:, :, :shot], idx[:, :, shot:])
        )
        return start, count, s_idx, q_idx

    starts = range(0, total, chunk_size)
    if not prefetch or len(starts) == 1:
        yield from map(make, starts)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(make, starts[0])
        for nxt in starts[1:]:
            ready, pending = pending.result(), pool.submit(make, nxt)
            yield ready
        yield pending.result()


def episodic_class_accuracy(
    features: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    sampler: EpisodeSampler,
    *,
    normalize: str = "none",
    base_mean: torch.Tensor | None = None,
    distance: str = "euclidean",
    chunk_size: int = 512,
) -> dict[int, float]:
    """Accuracy of each class's queries over the sampler's episodes (current epoch): {label: fraction}.

    The same nearest-prototype decisions as :func:`episodic_eval` (same episodes, normalisation and
    distance), counted per class instead of per episode; classes never drawn are absent. Since every way
    has ``n_query`` queries, the query-weighted mean of these equals ``episodic_eval(...).mean``.
    """
    labels_t = torch.as_tensor(_check_inputs(features, labels, sampler, distance), dtype=torch.long)
    feats = normalize_features(features, normalize, base_mean)
    way, shot, n_query = sampler.n_way, sampler.n_shot, sampler.n_query
    n_classes = int(labels_t.max()) + 1
    hits = torch.zeros(n_classes, dtype=torch.float64)
    seen = torch.zeros(n_classes, dtype=torch.float64)
    target = torch.arange(way).repeat_interleave(n_query)
    for _, count, s_idx, q_idx in _index_chunks(sampler, chunk_size, prefetch=False):
        support = feats[s_idx].view(count, way, shot, -1)
        query = feats[q_idx].view(count, way * n_query, -1)
        scores = centroid_scores(query, support.mean(2), distance)  # [E, W*Q, W]
        correct = (scores.argmax(-1) == target).double()
        query_class = labels_t[s_idx.view(count, way, shot)[:, :, 0]].repeat_interleave(n_query, dim=1)
        hits.index_add_(0, query_class.reshape(-1), correct.reshape(-1))
        seen.index_add_(0, query_class.reshape(-1), torch.ones_like(correct).reshape(-1))
    return {int(c): float(hits[c] / seen[c]) for c in torch.nonzero(seen).flatten().tolist()}
