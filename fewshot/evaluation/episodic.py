"""Fast episodic evaluation of a nearest-prototype classifier on cached features.

Thousands of episodes per chunk: the sampler draws a chunk's indices in one vectorised call, features
are gathered once per chunk, and prototypes, distances and accuracies are batched tensor operations.
Prototypes are class means of the support features (Snell, Swersky & Zemel 2017, "Prototypical Networks
for Few-shot Learning"); features may first be L2-normalised, or centred on the base classes' mean and
then L2-normalised (CL2N, Wang et al. 2019, "SimpleShot"). The score maths is
:func:`fewshot.methods.functional.centroid_scores`, the one the methods use, so this path decides like
``NearestCentroid`` / ``ProtoNet`` run through :func:`fewshot.evaluation.generic.evaluate_episodes`
(tested episode by episode), only faster.
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from fewshot.evaluation.functional import episodic_accuracy
from fewshot.methods.functional import DISTANCES, centroid_scores, normalize_features
from fewshot.sampling.fixed import EpisodeSampler
from fewshot.utils.device import resolve_device


@dataclass(frozen=True)
class EpisodicResult:
    """accuracies: [n_episodes] fraction of correct queries per episode; mean and ci95 over them.

    class_accuracy: {dataset label: fraction of that class's queries classified correctly} over the
    episodes (classes never drawn are absent), when the evaluator computed it (the generic one does;
    ``episodic_eval`` leaves it None, see :func:`episodic_class_accuracy`).
    """

    accuracies: np.ndarray
    mean: float
    ci95: float
    n_way: int
    n_shot: int
    n_query: int
    class_accuracy: dict[int, float] | None = None

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
            :func:`centroid_scores`. device: ``"auto"``, ``"cpu"``, ``"cuda"``...
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
    features: torch.Tensor, labels: np.ndarray | torch.Tensor, sampler: EpisodeSampler, distance: str | None = None
) -> np.ndarray:
    """The checks the episodic evaluators share (``distance=None``: no distance to check); returns ``labels``
    as a numpy array."""
    if not isinstance(sampler, EpisodeSampler):
        raise ValueError(f"episodic evaluation needs a fixed-shape EpisodeSampler, got {type(sampler).__name__}")
    if features.ndim != 2 or features.shape[0] != len(sampler.labels):
        raise ValueError(
            f"features must be [{len(sampler.labels)}, d] (one row per label), got {tuple(features.shape)}"
        )
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if not np.array_equal(labels, sampler.labels):
        raise ValueError("labels differ from the labels the sampler was built on; build the sampler on these labels")
    if distance is not None and distance not in DISTANCES:
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

    The same nearest-prototype decisions as :func:`episodic_eval` (same episodes, normalisation, distance
    and kernel), counted per class instead of per episode; classes never drawn are absent. Since every
    way has ``n_query`` queries, the query-weighted mean of these equals ``episodic_eval(...).mean``.
    """
    labels = _check_inputs(features, labels, sampler, distance)
    feats = normalize_features(features, normalize, base_mean)
    way, shot, n_query = sampler.n_way, sampler.n_shot, sampler.n_query
    tally = ClassTally(labels, way, shot, n_query)
    target = torch.arange(way).repeat_interleave(n_query)
    with torch.inference_mode():
        for _, count, s_idx, q_idx in _index_chunks(sampler, chunk_size, prefetch=False):
            support = feats[s_idx].view(count, way, shot, -1)
            query = feats[q_idx].view(count, way * n_query, -1)
            tally.add(s_idx, prototype_predictions(support, query, distance) == target)
    return tally.result()


class ClassTally:
    """Running per-class hit counts of episodic queries, keyed by dataset label.

    ``add(s_idx, correct)`` takes a chunk's support indices [E * W * S] (way by way, as
    :func:`_index_chunks` yields them; a way's class is its first support item's label) and ``correct``
    [E, W * Q] bool, queries way by way.
    """

    def __init__(self, labels: np.ndarray, n_way: int, n_shot: int, n_query: int) -> None:
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.n_way, self.n_shot, self.n_query = n_way, n_shot, n_query
        n_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.hits = torch.zeros(n_classes, dtype=torch.float64)
        self.seen = torch.zeros(n_classes, dtype=torch.float64)

    def add(self, s_idx: torch.Tensor, correct: torch.Tensor) -> None:
        count = correct.shape[0]
        way_class = self.labels[s_idx.cpu().view(count, self.n_way, self.n_shot)[:, :, 0]]  # [E, W]
        query_class = way_class.repeat_interleave(self.n_query, dim=1).reshape(-1)
        correct = correct.reshape(-1).to("cpu", torch.float64)
        self.hits.index_add_(0, query_class, correct)
        self.seen.index_add_(0, query_class, torch.ones_like(correct))

    def result(self) -> dict[int, float]:
        return {int(c): float(self.hits[c] / self.seen[c]) for c in torch.nonzero(self.seen).flatten().tolist()}


def prototype_predictions(support: torch.Tensor, query: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Nearest-prototype way of each query of a batch of episodes: [E, W * Q] int64.

    support: [E, W, S, d]; query: [E, W * Q, d]. A way's prototype is the mean of its support; the scores
    are :func:`centroid_scores`'s ranking scores (``exact=False``) in the classes-first layout [E, W, W * Q]
    so that the max runs across rows. Ties go to the lower way index, as ``argmax`` breaks them.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {DISTANCES}")
    n_ep, way = support.shape[0], support.shape[1]
    if query.ndim != 3 or query.shape[0] != n_ep or query.shape[1] % way:
        raise ValueError(f"query must be [{n_ep}, {way} * n_query, d], got {tuple(query.shape)}")
    scores = centroid_scores(query, support.mean(dim=2), distance, exact=False, classes_first=True)
    return scores.max(dim=1).indices  # first maximum on ties


def prototype_accuracy(support: torch.Tensor, query: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Nearest-prototype accuracy of a batch of episodes.

    support: [E, W, S, d]; query: [E, W * Q, d], way by way (the first Q queries have label 0, ...).
    Returns [E] float64: the fraction of each episode's queries whose nearest prototype (the mean of
    its way's support; squared Euclidean distance or cosine) is their own way's; see
    :func:`prototype_predictions`.
    """
    pred = prototype_predictions(support, query, distance)
    way = support.shape[1]
    target = torch.arange(way, device=query.device).repeat_interleave(query.shape[1] // way)
    return (pred == target).sum(dim=1).to(torch.float64) / query.shape[1]
