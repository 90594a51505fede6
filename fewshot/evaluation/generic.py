"""Episodic evaluation of any :class:`~fewshot.methods.base.FewShotClassifier` on cached features.

The protocol of Vinyals et al. 2016 ("Matching Networks for One Shot Learning") as the few-shot
literature reports it (e.g. Chen et al. 2019, "A Closer Look at Few-shot Classification"): per episode,
fit the method on the N-way K-shot support, score the queries, count a query correct when its argmax is
its own way; report the mean over episodes with a 95% confidence interval. The episodes are exactly
those :func:`fewshot.evaluation.episodic.episodic_eval` evaluates (the sampler's current epoch, drawn in
the same chunks), so for the nearest-centroid methods the two paths agree episode by episode; the fast
path stays for them, this one serves every method.

Under torchrun :func:`evaluate_episodes` is collective: within each chunk, episode ``i`` is fitted and
scored by rank ``i mod world`` and the query outcomes are gathered, so every rank returns the whole result,
as one process computes it.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from fewshot.evaluation.episodic import ClassTally, EpisodicResult, _check_inputs, _index_chunks
from fewshot.evaluation.functional import episodic_accuracy
from fewshot.methods.base import FewShotClassifier
from fewshot.sampling.fixed import EpisodeSampler
from fewshot.utils import distributed
from fewshot.utils.device import resolve_device

MethodSource = FewShotClassifier | Callable[[], FewShotClassifier]


def evaluate_episodes(
    method: FewShotClassifier | Callable[[], FewShotClassifier],
    features: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    sampler: EpisodeSampler,
    *,
    chunk_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> EpisodicResult:
    """Fit and score ``method`` on every episode of the sampler's current epoch.

    Episode ``i`` is ``sampler.sample_batch(sampler.epoch * sampler.n_episodes + i, 1)[0]`` ([W, S + Q]
    dataset indices, the first S columns support): support [W * S, d] with labels 0..W-1 way by way
    goes to ``fit``, queries [W * Q, d] (labels likewise) to ``scores``, which must return [W * Q, W].

    Args:
        method: a factory (``Callable[[], FewShotClassifier]``, e.g. ``lambda: NearestCentroid(...)``),
            called once per episode; or an instance, deep-copied once per episode from the instance as
            given (a copy of a large backbone per episode is slow: pass a factory then). Either way
            nothing one episode's ``fit`` leaves behind (prototypes, fine-tuned weights, optimiser state)
            reaches the next episode, whether or not ``fit`` overwrites all of its state.
        features: [n, d] cached features, one row per item of ``labels``; labels: [n], the ones the
            sampler was built on (checked).
        chunk_size: episodes whose indices are drawn and features gathered in one step; the result does
            not depend on it.
        device: where the features go (``None``: where they are; ``"auto"``, ``"cpu"``, ``"cuda"``...);
            the method's own tensors stay where it put them.
        progress: show a tqdm bar.

    A method whose ``scores_episodes`` gives the chunk's scores at once (MAML, ANIL) is scored that way, one
    fresh method per chunk, in one process; the same episodes, to float rounding the same scores.

    ``fit`` runs under the caller's grad mode (a method that trains a head in ``fit`` needs autograd, so
    no ``inference_mode`` here; features carry no grad, so the cached ones build no graph); ``scores``
    runs under ``no_grad``. Training/eval mode is left as the method sets it.

    Returns an :class:`EpisodicResult`: per-episode accuracies, their mean and 95% CI
    (:func:`episodic_accuracy`), the episode shape, and ``class_accuracy`` {dataset label: accuracy of
    that class's queries} as :func:`episodic_class_accuracy` counts it.
    """
    labels = _check_inputs(features, labels, sampler)
    make = _method_maker(method)
    feats = features if device is None else features.to(resolve_device(device))
    way, shot, n_query = sampler.n_way, sampler.n_shot, sampler.n_query
    support_labels = torch.arange(way, device=feats.device).repeat_interleave(shot)
    target = torch.arange(way, device=feats.device).repeat_interleave(n_query)
    total = sampler.n_episodes
    acc = torch.empty(total, dtype=torch.float64)
    tally = ClassTally(labels, way, shot, n_query)
    with tqdm(total=total, desc="episodes", unit="ep", disable=not progress) as bar:
        for start, count, s_idx, q_idx in _index_chunks(sampler, chunk_size, prefetch=False):
            support = feats[s_idx.to(feats.device)].view(count, way * shot, -1)
            query = feats[q_idx.to(feats.device)].view(count, way * n_query, -1)
            if distributed.is_distributed():  # this rank's episodes of the chunk, then all of them
                mine = [_episode_correct(make(), support[e], support_labels, query[e], target)
                        for e in distributed.shard(range(count))]
                local = torch.stack(mine) if mine else torch.zeros(0, way * n_query, dtype=torch.bool)
                correct = distributed.gather_shards(local.cpu(), count)
            else:
                batched = make().scores_episodes(support, support_labels, query)  # None: no batched path
                correct = (batched.argmax(-1) == target) if batched is not None else torch.stack(
                    [_episode_correct(make(), support[e], support_labels, query[e], target) for e in range(count)]
                )  # [count, W * Q]
            acc[start : start + count] = correct.sum(dim=1).to("cpu", torch.float64) / (way * n_query)
            tally.add(s_idx, correct)
            bar.update(count)
    mean, ci95 = episodic_accuracy(acc)
    return EpisodicResult(acc.numpy(), mean, ci95, way, shot, n_query, class_accuracy=tally.result())


def _method_maker(method: MethodSource) -> Callable[[], FewShotClassifier]:
    """A callable giving a method no episode has touched: fresh from the factory, or a deep copy."""
    if isinstance(method, FewShotClassifier):  # checked first: a module is callable too
        pristine = copy.deepcopy(method)  # so that a caller changing ``method`` meanwhile changes nothing
        return lambda: copy.deepcopy(pristine)
    if not callable(method):
        raise TypeError(f"method must be a FewShotClassifier or a factory returning one, got {type(method).__name__}")

    def fresh() -> FewShotClassifier:
        made = method()
        if not isinstance(made, FewShotClassifier):
            raise TypeError(f"the method factory returned {type(made).__name__}, not a FewShotClassifier")
        return made

    return fresh


def _episode_correct(
    method: FewShotClassifier,
    support: torch.Tensor,
    support_labels: torch.Tensor,
    query: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """[W * Q] bool: whether each query's argmax score (ties: lower way) is its way."""
    method.fit(support, support_labels)
    with torch.no_grad():
        scores = method.scores(query)
    way = int(support_labels.max()) + 1
    if scores.shape != (len(query), way):
        raise ValueError(f"{type(method).__name__}.scores returned shape {tuple(scores.shape)}; an episode of "
                         f"{len(query)} queries and {way} ways needs [{len(query)}, {way}]")
    return scores.argmax(dim=1).to(target.device) == target
