"""Episodic samplers: episode structure, seeding, uniformity, errors, collate and DataLoader use."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, Subset

from fewshot import Episode, EpisodeCollate, EpisodeSampler, VariableEpisodeSampler, collate_episode
from fewshot.sampling._random import floyd_choose, philox4x32, random_order, uniforms

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_labels(sizes: list[int], seed: int = 0, offset: int = 0, spacing: int = 1) -> np.ndarray:
    """Labels with ``sizes[c]`` items of label ``offset + spacing * c``, in shuffled order."""
    labels = np.repeat(offset + spacing * np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(labels)


def chi_square(observed: np.ndarray, expected: float, scale: float = 1.0) -> float:
    """Pearson's statistic; ``scale`` corrects the variance of counts drawn without replacement."""
    return float(((observed - expected) ** 2).sum() / (expected * scale))


# --- the counter-based generator -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [  # Random123's published known-answer vectors for Philox4x32-10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_matches_random123_known_answers(counter, key, expected):
    assert tuple(int(w[0]) for w in philox4x32(counter, key)) == expected


def test_uniforms_of_an_episode_do_not_depend_on_the_other_episodes_drawn():
    key = (12345, 678)
    together = uniforms(key, np.arange(100, dtype=np.uint64), stream=2, n=7)
    alone = uniforms(key, np.array([42], dtype=np.uint64), stream=2, n=7)
    np.testing.assert_array_equal(together[42], alone[0])
    assert ((together >= 0) & (together < 1)).all()
    assert len(np.unique(together)) == together.size


def _floyd_reference(u: list[float], n: int, k: int) -> list[int]:
    chosen: list[int] = []
    for j in range(k):
        top = n - k + j
        t = min(int(u[j] * (top + 1)), top)
        chosen.append(top if t in chosen else t)
    return chosen


@pytest.mark.parametrize(("n", "k"), [(5, 5), (7, 3), (30, 20), (10**6, 4)])
def test_floyd_choose_equals_a_plain_python_floyd(n, k):
    u = np.random.default_rng(n + k).random((50, 3, k))
    got = floyd_choose(u, n, k)
    expected = [[_floyd_reference(list(row), n, k) for row in ep] for ep in u]
    np.testing.assert_array_equal(got, np.array(expected))
    assert all(len(set(row)) == k for row in got.reshape(-1, k).tolist())


def test_floyd_choose_picks_every_subset_equally_often():
    n, k, draws = 6, 2, 30_000
    u = uniforms((7, 9), np.arange(draws, dtype=np.uint64), stream=0, n=k)
    subsets = np.sort(floyd_choose(u, n, k), axis=1)
    codes = subsets[:, 0] * n + subsets[:, 1]
    counts = np.array([np.sum(codes == a * n + b) for a, b in itertools.combinations(range(n), 2)])
    # 15 subsets -> 14 degrees of freedom; critical value at p = 1e-6 is 54.64 (scipy.stats.chi2.isf).
    assert counts.sum() == draws
    assert chi_square(counts, draws / 15) < 54.64


def test_random_order_gives_every_permutation_equally_often():
    draws = 24_000
    order = random_order((3, 4), np.arange(draws, dtype=np.uint64), stream=1, shape=(3,))
    codes = order[:, 0] * 9 + order[:, 1] * 3 + order[:, 2]
    counts = np.array([np.sum(codes == p[0] * 9 + p[1] * 3 + p[2]) for p in itertools.permutations(range(3))])
    assert counts.sum() == draws
    # 6 permutations -> 5 degrees of freedom; critical value at p = 1e-6 is 35.89.
    assert chi_square(counts, draws / 6) < 35.89


# --- fixed-shape episodes --------------------------------------------------------------------------


def check_batch(labels: np.ndarray, batch: np.ndarray, sampler: EpisodeSampler) -> None:
    """Every invariant of an N-way K-shot Q-query batch [count, way, shot + query]."""
    assert batch.shape[1:] == (sampler.n_way, sampler.n_shot + sampler.n_query)
    eligible = set(sampler.classes.tolist())
    for episode in batch:
        flat = episode.reshape(-1)
        assert len(np.unique(flat)) == flat.size  # no duplicate index, so support and query are disjoint
        way_labels = labels[episode]
        assert (way_labels == way_labels[:, :1]).all()  # each way holds one class only
        classes = way_labels[:, 0]
        assert len(set(classes.tolist())) == sampler.n_way
        assert set(classes.tolist()) <= eligible
        support, query = set(episode[:, : sampler.n_shot].reshape(-1)), set(episode[:, sampler.n_shot :].reshape(-1))
        assert not support & query
        assert len(support) == sampler.n_way * sampler.n_shot and len(query) == sampler.n_way * sampler.n_query


@FAST
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    n_way=st.integers(1, 6),
    n_shot=st.integers(1, 5),
    n_query=st.integers(1, 5),
    seed=st.integers(0, 2**64),
    offset=st.integers(0, 50),  # any non-negative labels: negative ones are refused (see the errors below)
)
def test_episodes_have_n_way_distinct_classes_and_exact_disjoint_shots(sizes, n_way, n_shot, n_query, seed, offset):
    labels = make_labels(sizes, seed % 1000, offset=offset, spacing=3)
    eligible = sum(s >= n_shot + n_query for s in sizes)
    assume(eligible >= n_way)
    sampler = EpisodeSampler(labels, n_way, n_shot, n_query, 40, seed=seed, small_classes="exclude")
    assert len(sampler) == 40
    assert len(sampler.classes) == eligible
    assert sum(sampler.excluded_classes.values()) == sum(s for s in sizes if s < n_shot + n_query)
    check_batch(labels, sampler.sample_batch(0, 40), sampler)


@FAST
@given(seed=st.integers(0, 2**32), start=st.integers(0, 600), count=st.integers(1, 300))
def test_sample_batch_returns_the_episodes_iteration_yields(seed, start, count):
    labels = make_labels([25] * 9 + [60, 200])
    sampler = EpisodeSampler(labels, 4, 2, 3, start + count, seed=seed)
    listed = list(sampler)[start:]  # iteration crosses its internal chunks of 256 episodes
    batch = sampler.sample_batch(start, count)
    flat = np.concatenate([batch[:, :, :2].reshape(count, -1), batch[:, :, 2:].reshape(count, -1)], axis=1)
    assert flat.tolist() == listed
    assert batch[count // 2].tolist() == sampler.sample_batch(start + count // 2, 1)[0].tolist()


def test_same_seed_gives_the_same_episodes_and_different_seeds_differ():
    labels = make_labels([30] * 20)
    a = EpisodeSampler(labels, 5, 1, 5, 50, seed=11)
    b = EpisodeSampler(labels, 5, 1, 5, 50, seed=11)
    c = EpisodeSampler(labels, 5, 1, 5, 50, seed=12)
    assert list(a) == list(b) == list(a)
    differing = sum(x != y for x, y in zip(list(a), list(c)))
    assert differing == 50


def test_unseeded_sampler_draws_a_seed_once_and_repeats_itself():
    labels = make_labels([30] * 20)
    a = EpisodeSampler(labels, 5, 1, 5, 20)
    b = EpisodeSampler(labels, 5, 1, 5, 20)
    assert isinstance(a.seed, int) and a.seed != b.seed
    assert list(a) == list(a)
    assert list(EpisodeSampler(labels, 5, 1, 5, 20, seed=a.seed)) == list(a)


def test_set_epoch_moves_on_to_the_next_block_of_episodes():
    labels = make_labels([30] * 20)
    sampler = EpisodeSampler(labels, 5, 1, 5, 10, seed=3)
    first = list(sampler)
    sampler.set_epoch(2)
    third = list(sampler)
    assert third != first
    assert third == sampler.index_lists(20, 10)


def test_class_frequency_over_many_episodes_is_uniform():
    n_classes, way, episodes = 20, 5, 4000
    labels = make_labels([25] * n_classes, seed=1)
    sampler = EpisodeSampler(labels, way, 2, 2, episodes, seed=2024)
    classes = labels[sampler.sample_batch(0, episodes)[:, :, 0]]
    counts = np.bincount(classes.reshape(-1), minlength=n_classes)
    # Each episode draws `way` distinct classes, so the counts' variance is (C - w) / (C - 1) of a
    # multinomial's; with that correction the statistic is chi-square with C - 1 = 19 degrees of freedom,
    # whose critical value at p = 1e-6 is 63.68 (scipy.stats.chi2.isf(1e-6, 19)).
    assert chi_square(counts, episodes * way / n_classes, (n_classes - way) / (n_classes - 1)) < 63.68
    first_way = np.bincount(classes[:, 0], minlength=n_classes)  # the class order within episodes, too
    assert chi_square(first_way, episodes / n_classes) < 63.68


def test_items_and_the_support_query_split_are_uniform_within_a_class():
    size, shot, query, episodes = 25, 5, 5, 3000
    labels = make_labels([size] * 6, seed=4)
    sampler = EpisodeSampler(labels, 6, shot, query, episodes, seed=99)
    batch = sampler.sample_batch(0, episodes)
    members = np.flatnonzero(labels == 0)
    way_of_class_0 = np.argmax(labels[batch[:, :, 0]] == 0, axis=1)  # 6-way over 6 classes: always present
    class_0 = batch[np.arange(episodes), way_of_class_0]  # [episodes, shot + query]
    support_counts = np.array([(class_0[:, :shot] == m).sum() for m in members])
    query_counts = np.array([(class_0[:, shot:] == m).sum() for m in members])
    # 25 items -> 24 degrees of freedom; critical value at p = 1e-6 is 72.23. Without-replacement
    # correction (n - k) / (n - 1) as above.
    assert chi_square(support_counts, episodes * shot / size, (size - shot) / (size - 1)) < 72.23
    assert chi_square(query_counts, episodes * query / size, (size - query) / (size - 1)) < 72.23


def test_classes_argument_restricts_sampling_to_those_labels():
    labels = make_labels([30] * 10, offset=100)
    sampler = EpisodeSampler(labels, 3, 2, 2, 200, seed=0, classes=[101, 104, 105, 109])
    assert sampler.classes.tolist() == [101, 104, 105, 109]
    assert set(labels[sampler.sample_batch(0, 200)].reshape(-1).tolist()) == {101, 104, 105, 109}


def test_sampler_accepts_lists_tensors_and_huge_classes():
    sizes = [5000, 3, 40, 40]
    labels = make_labels(sizes, seed=2)
    for given_labels in (labels.tolist(), torch.as_tensor(labels), labels.astype(np.int32)):
        sampler = EpisodeSampler(given_labels, 3, 5, 15, 30, seed=1, small_classes="exclude")
        check_batch(labels, sampler.sample_batch(0, 30), sampler)
        assert sampler.excluded_classes == {1: 3}


# --- errors ----------------------------------------------------------------------------------------


def test_sampler_raises_when_class_has_fewer_than_k_plus_q_items():
    labels = make_labels([30, 30, 7, 30])
    message = r"1 class\(es\) have fewer than n_shot \+ n_query = 20 items: 2 \(7 items\).*small_classes='exclude'"
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(labels, 2, 5, 15, 10)
    assert EpisodeSampler(labels, 2, 5, 15, 10, small_classes="exclude").excluded_classes == {2: 7}


def test_sampler_raises_when_n_way_exceeds_eligible_classes():
    labels = make_labels([30, 30, 7, 30])
    message = r"n_way=4 but only 3 classes have at least 20 items \(1 more were too small\); lower n_way to at most 3"
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(labels, 4, 5, 15, 10, small_classes="exclude")


@pytest.mark.parametrize("name", ["n_way", "n_shot", "n_query", "n_episodes"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_sampler_raises_on_non_positive_or_non_int_sizes(name, value):
    kwargs = {"n_way": 2, "n_shot": 1, "n_query": 1, "n_episodes": 5} | {name: value}
    with pytest.raises(ValueError, match=rf"{name} must be an int >= 1, got {value!r}"):
        EpisodeSampler(make_labels([5, 5, 5]), **kwargs)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "labels is empty"),
        ([0.0, 1.0, 1.0], "labels must be ints, got dtype float64"),
        ([[0, 1], [1, 0]], "1-D sequence of ints"),
    ],
)
def test_sampler_raises_on_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(labels, 1, 1, 1, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": [0, 99]}, r"classes 99 do not occur in labels"),
        ({"classes": []}, "classes is empty"),
        ({"seed": -3}, "seed must be a non-negative int or None, got -3"),
        ({"small_classes": "drop"}, r"small_classes='drop' is not one of \('error', 'exclude'\)"),
    ],
)
def test_sampler_raises_on_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(make_labels([5, 5, 5]), 2, 1, 1, 5, **kwargs)


@pytest.mark.parametrize(
    "make",
    [lambda labels: EpisodeSampler(labels, 2, 2, 2, 5, seed=0),
     lambda labels: VariableEpisodeSampler(labels, 5, seed=0, min_ways=2)],
    ids=["EpisodeSampler", "VariableEpisodeSampler"],
)
@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("negative", [-1, -7])
def test_sampler_refuses_negative_labels_and_says_how_to_drop_them(make, as_tensor, negative):
    # -1 usually means "unlabelled": sampled as a class it would mix unrelated items in one way
    labels = make_labels([10, 10, 10])
    labels[[3, 8, 20]] = negative
    message = rf"labels hold 3 negative value\(s\) \(e.g. {negative} at index 3\).*torch.utils.data.Subset"
    with pytest.raises(ValueError, match=message):
        make(torch.as_tensor(labels) if as_tensor else labels)


def test_sampler_on_the_labelled_subset_never_yields_an_unlabelled_item():
    labels = make_labels([10, 10, 10])
    labels[::4] = -1
    keep = np.flatnonzero(labels >= 0)  # the recipe the error message gives
    sampler = EpisodeSampler(labels[keep], 3, 2, 2, 20, seed=0)
    loader = DataLoader(Subset(LabelledPoints(labels), keep), batch_sampler=sampler, collate_fn=sampler.collate)
    for ep in loader:
        items = torch.cat([ep.support_x, ep.query_x])
        assert (items[:, 1] >= 0).all() and np.isin(items[:, 0].long().numpy(), keep).all()
        check_episode(ep, labels, 3, 2, 2)


# --- collate and DataLoader ------------------------------------------------------------------------


class LabelledPoints(Dataset):
    """x = [index, label] as floats, so a collated episode shows which items it holds."""

    def __init__(self, labels: np.ndarray, batched: bool = False) -> None:
        self.labels = labels
        self.x = torch.stack([torch.arange(len(labels)), torch.as_tensor(labels)], 1).float()
        if batched:
            self.__getitems__ = self._getitems

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.labels[i])

    def _getitems(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.x[idx], torch.as_tensor(self.labels)[idx]


def check_episode(ep: Episode, labels: np.ndarray, way: int, shot: int, query: int) -> None:
    assert ep.support_x.shape == (way * shot, 2) and ep.query_x.shape == (way * query, 2)
    assert ep.support_y.tolist() == np.repeat(np.arange(way), shot).tolist()
    assert ep.query_y.tolist() == np.repeat(np.arange(way), query).tolist()
    assert ep.class_ids[ep.support_y].tolist() == labels[ep.support_x[:, 0].long().numpy()].tolist()
    assert ep.class_ids[ep.query_y].tolist() == labels[ep.query_x[:, 0].long().numpy()].tolist()
    assert not set(ep.support_x[:, 0].tolist()) & set(ep.query_x[:, 0].tolist())


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("batched", [False, True])
def test_dataloader_yields_the_sampler_episodes_in_any_worker(num_workers, batched):
    labels = make_labels([12] * 8, offset=10, spacing=7)
    sampler = EpisodeSampler(labels, 3, 2, 4, 12, seed=5)
    ds = LabelledPoints(labels, batched=batched)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=sampler.collate, num_workers=num_workers)
    episodes = list(loader)
    assert len(episodes) == 12
    batch = sampler.sample_batch(0, 12)
    for i, ep in enumerate(episodes):
        check_episode(ep, labels, 3, 2, 4)
        assert ep.support_x[:, 0].long().tolist() == batch[i, :, :2].reshape(-1).tolist()
        assert ep.query_x[:, 0].long().tolist() == batch[i, :, 2:].reshape(-1).tolist()
        assert ep.class_ids.tolist() == labels[batch[i, :, 0]].tolist()


@FAST
@given(n_way=st.integers(2, 5), n_shot=st.integers(1, 4), n_query=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_collated_labels_match_the_items_classes(n_way, n_shot, n_query, seed):
    labels = make_labels([10] * 6, seed=seed % 7)
    sampler = EpisodeSampler(labels, n_way, n_shot, n_query, 3, seed=seed)
    ds = LabelledPoints(labels)
    for indices in sampler:
        batch = [ds[i] for i in indices]
        check_episode(sampler.collate(batch), labels, n_way, n_shot, n_query)
        check_episode(collate_episode(batch), labels, n_way, n_shot, n_query)  # shape read from the labels


def test_one_way_episodes_need_the_sizes_to_split():
    labels = make_labels([10, 10])
    sampler = EpisodeSampler(labels, 1, 3, 2, 2, seed=0)
    ds = LabelledPoints(labels)
    batch = [ds[i] for i in next(iter(sampler))]
    check_episode(sampler.collate(batch), labels, 1, 3, 2)
    with pytest.raises(ValueError, match="cannot split a batch of 5 items of the single label"):
        collate_episode(batch)


def test_collate_rejects_batches_not_in_episode_layout():
    ds = LabelledPoints(np.array([0, 1, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"not in episode layout.*label runs \[0, 1, 0, 1, 2\]"):
        collate_episode([ds[i] for i in range(5)])
    with pytest.raises(ValueError, match="batch has n_shot=2 .* expects n_shot=1"):
        EpisodeCollate(2, 1, 1)([ds[i] for i in (0, 2, 1, 3, 0, 1)])  # labels 0 0 1 1 | 0 1
    with pytest.raises(ValueError, match=r"each item must be an \(x, y\) pair"):
        collate_episode([torch.zeros(2), torch.zeros(2), torch.zeros(2)])


# --- variable-way, variable-shot episodes ----------------------------------------------------------


@FAST
@given(
    sizes=st.lists(st.integers(2, 400), min_size=5, max_size=70),
    seed=st.integers(0, 2**40),
    episode=st.integers(0, 10**6),
)
def test_variable_episodes_follow_the_meta_dataset_rules(sizes, seed, episode):
    labels = make_labels(sizes, seed % 100)
    sampler = VariableEpisodeSampler(labels, 10, seed=seed)
    ep = sampler.episode(episode)
    way = len(ep.class_ids)
    assert 5 <= way <= min(50, len(sizes))
    assert len(set(ep.class_ids.tolist())) == way
    n = np.array([sizes[c] for c in ep.class_ids])
    assert ep.n_query == min(10, int((n // 2).min()))
    assert (ep.n_support >= 1).all() and (ep.n_support <= n - ep.n_query).all()
    cap = (np.minimum(100, n - ep.n_query) + 1).sum()  # the support size S is at most this even for beta = 1
    assert ep.n_support.sum() <= min(500, cap)
    assert len(ep.support) == ep.n_support.sum() and len(ep.query) == way * ep.n_query
    everything = np.concatenate([ep.support, ep.query])
    assert len(np.unique(everything)) == everything.size  # support and query disjoint, no duplicates
    assert labels[ep.support].tolist() == np.repeat(ep.class_ids, ep.n_support).tolist()
    assert labels[ep.query].tolist() == np.repeat(ep.class_ids, ep.n_query).tolist()
    again = VariableEpisodeSampler(labels, 10, seed=seed).episode(episode)
    assert all(np.array_equal(a, b) for a, b in zip(ep, again))


def test_variable_episodes_vary_in_ways_and_shots_and_collate():
    sizes = np.random.default_rng(3).integers(2, 300, 60).tolist()
    labels = make_labels(sizes)
    sampler = VariableEpisodeSampler(labels, 40, seed=8)
    episodes = [sampler.episode(i) for i in range(40)]
    assert len({len(e.class_ids) for e in episodes}) > 5
    assert len({int(e.n_support.sum()) for e in episodes}) > 5
    assert list(sampler) == [np.concatenate([e.support, e.query]).tolist() for e in episodes]
    loader = DataLoader(LabelledPoints(labels), batch_sampler=sampler, collate_fn=sampler.collate)
    for ep, idx in zip(loader, episodes):
        assert ep.class_ids.tolist() == idx.class_ids.tolist()
        assert ep.support_x[:, 0].long().tolist() == idx.support.tolist()
        assert ep.support_y.tolist() == np.repeat(np.arange(len(idx.class_ids)), idx.n_support).tolist()
        assert ep.query_y.tolist() == np.repeat(np.arange(len(idx.class_ids)), idx.n_query).tolist()


def test_variable_sampler_ways_are_uniform_between_5_and_the_cap():
    labels = make_labels([20] * 12)
    sampler = VariableEpisodeSampler(labels, 1, seed=1)
    ways = np.array([len(sampler.episode(i).class_ids) for i in range(1400)])
    counts = np.bincount(ways, minlength=13)[5:]
    assert ways.min() == 5 and ways.max() == 12
    # 8 possible ways -> 7 degrees of freedom; critical value at p = 1e-6 is 40.52.
    assert chi_square(counts, 1400 / 8) < 40.52


def test_variable_sampler_raises_with_too_few_classes_and_on_singletons():
    with pytest.raises(ValueError, match="min_ways=5 but only 4 classes have at least 2 items"):
        VariableEpisodeSampler(make_labels([5, 5, 5, 5]), 3)
    with pytest.raises(ValueError, match=r"fewer than 2 \(one support and one query\) items: 5 \(1 items\)"):
        VariableEpisodeSampler(make_labels([5] * 5 + [1]), 3)
    sampler = VariableEpisodeSampler(make_labels([5] * 5 + [1]), 3, small_classes="exclude")
    assert sampler.excluded_classes == {5: 1}
