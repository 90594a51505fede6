"""The generic episodic evaluator: any FewShotClassifier, the same episodes and result as the fast path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from fewshot import EpisodeSampler, VariableEpisodeSampler
from fewshot.evaluation import episodic_accuracy, episodic_class_accuracy, episodic_eval, evaluate_episodes
from fewshot.methods import FewShotClassifier, NearestCentroid, ProtoNet


def clustered(n_classes: int = 12, per_class: int = 30, dim: int = 16, spread: float = 1.5, seed: int = 11):
    """Gaussian clusters, overlapping enough that episodes score between chance and perfect."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=gen)]
    centres = torch.randn(n_classes, dim, generator=gen, dtype=torch.float64)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=gen, dtype=torch.float64)
    return feats + 0.7, labels.numpy()  # off the origin, so that centring matters


class NearestNeighbour(FewShotClassifier):
    """1-NN on cached features: a method the fast path does not cover."""

    def fit(self, support: Tensor, support_labels: Tensor) -> NearestNeighbour:
        self.support, self.support_labels = support, support_labels
        self.n_classes = self._n_classes(support_labels)
        return self

    def scores(self, query: Tensor) -> Tensor:
        dist = torch.cdist(query, self.support)
        out = torch.full((len(query), self.n_classes), -torch.inf, dtype=query.dtype)
        # a class scores its nearest support item (negated distance)
        return out.scatter_reduce(1, self.support_labels.expand(len(query), -1), -dist, "amax")


class LeakyCentroid(NearestCentroid):
    """A buggy method whose fit adds to what earlier fits left: state would leak if an instance were reused."""

    def fit(self, support: Tensor, support_labels: Tensor) -> LeakyCentroid:
        previous = self.prototypes
        super().fit(support, support_labels)
        if previous is not None and previous.shape == self.prototypes.shape:
            self.prototypes = self.prototypes + 0.5 * previous
        return self


def reference_loop(make, feats, labels, sampler) -> tuple[np.ndarray, dict[int, float]]:
    """One episode at a time from sample_batch, a fresh method each, counts spelled out."""
    way, shot, n_query = sampler.n_way, sampler.n_shot, sampler.n_query
    first = sampler.epoch * sampler.n_episodes
    accs, hits, seen = [], {}, {}
    for i in range(sampler.n_episodes):
        episode = sampler.sample_batch(first + i, 1)[0]  # [W, S + Q]
        support = feats[torch.from_numpy(episode[:, :shot].reshape(-1))]
        query = feats[torch.from_numpy(episode[:, shot:].reshape(-1))]
        method = make().fit(support, torch.arange(way).repeat_interleave(shot))
        pred = method.scores(query).argmax(1).tolist()
        correct = 0
        for j, p in enumerate(pred):
            w = j // n_query
            c = int(labels[episode[w, 0]])
            hits[c] = hits.get(c, 0) + (p == w)
            seen[c] = seen.get(c, 0) + 1
            correct += p == w
        accs.append(correct / (way * n_query))
    return np.array(accs), {c: hits[c] / seen[c] for c in sorted(seen)}


CENTROID_METHODS = [(norm, dist) for norm in ("none", "l2n", "cl2n") for dist in ("euclidean", "cosine")]
SETTINGS = [(5, 1, 10), (5, 5, 15), (3, 2, 7), (10, 3, 5)]


@pytest.mark.parametrize(("way", "shot", "n_query"), SETTINGS)
@pytest.mark.parametrize("method", [*CENTROID_METHODS, "protonet"])
def test_fast_path_equals_the_generic_path_episode_by_episode(method, way, shot, n_query):
    feats, labels = clustered()
    base_mean = feats[::3].mean(dim=0)
    normalize, distance = ("none", "euclidean") if method == "protonet" else method
    mean = base_mean if normalize == "cl2n" else None
    if method == "protonet":
        make = ProtoNet
    else:
        make = lambda: NearestCentroid(normalize=normalize, base_mean=mean, distance=distance)
    options = {"normalize": normalize, "distance": distance, "base_mean": mean}
    sampler = EpisodeSampler(labels, way, shot, n_query, 100, seed=way * 10 + shot)
    generic = evaluate_episodes(make, feats, labels, sampler, chunk_size=64, progress=False)
    fast = episodic_eval(feats, labels, sampler, device="cpu", progress=False, **options)
    fast_classes = episodic_class_accuracy(feats, labels, sampler, **options)
    assert 0.3 < fast.mean < 0.95  # neither trivial nor hopeless, so mistakes are compared too
    np.testing.assert_allclose(generic.accuracies, fast.accuracies, rtol=0, atol=1e-12)
    assert generic.class_accuracy.keys() == fast_classes.keys()
    assert generic.class_accuracy == pytest.approx(fast_classes, abs=1e-12)
    assert (generic.mean, generic.ci95) == pytest.approx((fast.mean, fast.ci95), abs=1e-12)
    assert (generic.n_way, generic.n_shot, generic.n_query) == (way, shot, n_query)


@pytest.mark.parametrize("chunk_size", [1, 7, 256])
@pytest.mark.parametrize("epoch", [0, 2])
def test_generic_path_equals_a_fresh_method_per_episode_loop(chunk_size, epoch):
    feats, labels = clustered(seed=3)
    sampler = EpisodeSampler(labels, 4, 2, 5, 60, seed=8)
    sampler.set_epoch(epoch)
    result = evaluate_episodes(NearestNeighbour, feats, torch.as_tensor(labels), sampler, chunk_size=chunk_size,
                               progress=False)
    accs, per_class = reference_loop(NearestNeighbour, feats, labels, sampler)
    np.testing.assert_array_equal(result.accuracies, accs)
    assert result.class_accuracy == pytest.approx(per_class, abs=1e-12)
    assert (result.mean, result.ci95) == pytest.approx(episodic_accuracy(accs))


@pytest.mark.parametrize("source", ["instance", "factory"])
def test_no_state_leaks_between_episodes(source):
    feats, labels = clustered(seed=5)
    sampler = EpisodeSampler(labels, 5, 1, 5, 40, seed=1)
    instance = LeakyCentroid()
    result = evaluate_episodes(instance if source == "instance" else LeakyCentroid, feats, labels, sampler,
                               chunk_size=16, progress=False)
    assert instance.prototypes is None  # the given instance is copied, never fitted
    fresh, _ = reference_loop(LeakyCentroid, feats, labels, sampler)
    np.testing.assert_array_equal(result.accuracies, fresh)
    reused, _ = reference_loop(lambda: instance, feats, labels, sampler)
    assert not np.array_equal(reused, fresh)  # a leak would show in the accuracies


class WrongShape(NearestCentroid):
    def scores(self, query: Tensor) -> Tensor:
        return super().scores(query)[:, :-1]


@pytest.mark.parametrize(
    ("method", "sampler_kind", "error", "message"),
    [
        (WrongShape, "fixed", ValueError, r"WrongShape.scores returned shape \(6, 2\).*needs \[6, 3\]"),
        (lambda: "centroid", "fixed", TypeError, "the method factory returned str, not a FewShotClassifier"),
        ("centroid", "fixed", TypeError, "method must be a FewShotClassifier or a factory returning one"),
        (NearestCentroid, "variable", ValueError, "needs a fixed-shape EpisodeSampler, got VariableEpisodeSampler"),
    ],
)
def test_generic_path_raises_with_a_useful_message(method, sampler_kind, error, message):
    feats, labels = clustered(seed=0)
    if sampler_kind == "fixed":
        sampler = EpisodeSampler(labels, 3, 1, 2, 4, seed=0)
    else:
        sampler = VariableEpisodeSampler(labels, 3, seed=0)
    with pytest.raises(error, match=message):
        evaluate_episodes(method, feats, labels, sampler, progress=False)


def test_generic_path_refuses_labels_the_sampler_was_not_built_on():
    feats, labels = clustered(seed=0)
    sampler = EpisodeSampler(labels, 3, 1, 2, 4, seed=0)
    with pytest.raises(ValueError, match="labels differ from the labels the sampler was built on"):
        evaluate_episodes(NearestCentroid, feats, np.roll(labels, 1), sampler, progress=False)
