"""The common evaluator: per-class top-k, the metric object, buckets, episodic accuracy and evaluation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshot import EpisodeSampler, VariableEpisodeSampler
from fewshot.evaluation import (
    TopKAccuracy,
    assign_buckets,
    bucket_means,
    episodic_accuracy,
    episodic_eval,
    per_class_topk,
    prototype_accuracy,
    target_ranks,
    top1_accuracy,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_topk(scores: np.ndarray, targets: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Plain loops: rank = position of the target when classes are sorted by (-score, class index)."""
    n, n_classes = scores.shape
    hits = {k: np.zeros(n_classes) for k in ks}
    counts = np.zeros(n_classes)
    for i in range(n):
        order = sorted(range(n_classes), key=lambda c: (-scores[i, c], c))
        rank = order.index(targets[i])
        counts[targets[i]] += 1
        for k in ks:
            hits[k][targets[i]] += rank < k
    with np.errstate(invalid="ignore"):
        return {"n": counts} | {f"top{k}": np.where(counts > 0, hits[k] / np.maximum(counts, 1), np.nan) for k in ks}


@pytest.mark.parametrize("n_classes", [3, 7, 12])
@pytest.mark.parametrize("rounded", [False, True])  # rounded scores make ties frequent
def test_per_class_topk_equals_a_plain_loop_reference(n_classes, rounded):
    rng = np.random.default_rng(n_classes)
    scores = rng.normal(size=(300, n_classes))
    scores = np.round(scores) if rounded else scores
    targets = rng.integers(0, n_classes, 300)
    result = per_class_topk(torch.as_tensor(scores), torch.as_tensor(targets), ks=(1, 2, 5))
    ref = reference_topk(scores, targets, (1, 2, 5))
    np.testing.assert_array_equal(result.table["n"].to_numpy(), ref["n"])
    for col in ("top1", "top2", "top5"):
        np.testing.assert_allclose(result.table[col].to_numpy(), ref[col], rtol=0, atol=1e-12)
        present = ref["n"] > 0
        assert result.macro[col] == pytest.approx(ref[col][present].mean(), abs=1e-12)
        assert result.micro[col] == pytest.approx((ref[col][present] * ref["n"][present]).sum() / 300, abs=1e-12)
    assert result.truncated == {"top1": False, "top2": False, "top5": n_classes < 5}


def test_top1_is_argmax_accuracy_and_constant_scores_do_not_score_everything():
    scores = torch.zeros(6, 3)
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    result = per_class_topk(scores, targets, ks=(1, 2))
    # Ties go to the lower class index, as argmax breaks them: only class 0 counts as predicted.
    assert result.table["top1"].tolist() == [1.0, 0.0, 0.0]
    assert result.table["top2"].tolist() == [1.0, 1.0, 0.0]
    assert result.micro["top1"] == pytest.approx(1 / 3)


def test_zero_accuracy_classes_stay_and_classes_without_items_are_nan_and_left_out_of_macro():
    # class 0 always right, class 1 always wrong, class 2 has no test item, class 3 half right
    scores = torch.tensor([[5.0, 0, 0, 0], [5.0, 0, 0, 0], [0, 0, 0, 9.0], [0, 0, 0, 9.0], [9.0, 0, 0, 0]])
    targets = torch.tensor([0, 1, 3, 3, 3])
    result = per_class_topk(scores, targets, ks=(1,), class_names=["a", "b", "c", "d"])
    table = result.table
    assert table["name"].tolist() == ["a", "b", "c", "d"]
    assert table["n"].tolist() == [1, 1, 0, 3]
    assert table.loc[1, "top1"] == 0.0
    assert math.isnan(table.loc[2, "top1"])
    assert result.macro["top1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert result.micro["top1"] == pytest.approx(3 / 5)
    assert result.summary() == {"macro_top1": result.macro["top1"], "micro_top1": result.micro["top1"]}


def test_top5_with_fewer_than_5_classes_is_top_c_and_flagged():
    scores = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(1))
    result = per_class_topk(scores, targets)
    assert result.k_used == {"top1": 1, "top5": 3}
    assert result.truncated == {"top1": False, "top5": True}
    assert result.micro["top5"] == 1.0


@pytest.mark.parametrize("special", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("seed", range(3))
def test_target_rank_zero_is_exactly_argmax_even_with_nan_and_inf(special, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (400, 6), generator=gen).float()  # integer scores: many ties
    scores[torch.rand(scores.shape, generator=gen) < 0.15] = special
    targets = torch.randint(0, 6, (400,), generator=gen)
    ranks = target_ranks(scores, targets)
    torch.testing.assert_close(ranks == 0, scores.argmax(1) == targets, rtol=0, atol=0)
    # a full ranking: the ranks of all targets of one row are a permutation of 0..C-1
    row = scores[:1].expand(6, -1)
    assert sorted(target_ranks(row, torch.arange(6)).tolist()) == list(range(6))


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("n_classes", [2, 9])
def test_top1_accuracy_is_the_top1_of_per_class_topk(rounded, n_classes):
    gen = torch.Generator().manual_seed(n_classes)
    scores = torch.randn(300, n_classes, generator=gen, dtype=torch.float64)
    scores = scores.round() if rounded else scores
    targets = torch.randint(0, n_classes, (300,), generator=gen)
    targets[targets == 1] = 0  # class 1 has no item: left out of macro
    table = per_class_topk(scores, targets, ks=(1,))
    assert top1_accuracy(scores, targets, "micro") == table.micro["top1"]
    assert top1_accuracy(scores, targets, "macro") == pytest.approx(table.macro["top1"], abs=1e-15)


def test_top1_accuracy_is_nan_without_items_and_refuses_unknown_averages():
    assert math.isnan(top1_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "micro"))
    assert math.isnan(top1_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "macro"))
    with pytest.raises(ValueError, match="unknown accuracy kind 'weighted'; known: macro, micro"):
        top1_accuracy(torch.zeros(2, 2), torch.tensor([0, 1]), "weighted")
    with pytest.raises(ValueError, match="target 2 is outside 0..1"):
        top1_accuracy(torch.zeros(2, 2), torch.tensor([0, 2]))


@pytest.mark.parametrize(
    ("scores", "targets", "message"),
    [
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), r"scores must be \[n_items, n_classes\]"),
        (torch.zeros(3, 2), torch.zeros(4, dtype=torch.long), r"targets must be \[3\]"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 2]), "target 2 is outside 0..1"),
        (torch.zeros(3, 2), torch.zeros(3), "targets must be integer class indices"),
        (torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), "scores contain NaN or inf"),
    ],
)
def test_per_class_topk_raises_on_bad_input(scores, targets, message):
    with pytest.raises(ValueError, match=message):
        per_class_topk(scores, targets)


@pytest.mark.parametrize("ks", [(), (0,), (1, 1), (1.5,)])
def test_per_class_topk_raises_on_bad_ks(ks):
    with pytest.raises(ValueError, match="ks must be distinct ints >= 1"):
        per_class_topk(torch.zeros(2, 2), torch.tensor([0, 1]), ks=ks)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25, deadline=None)
@given(
    n_classes=st.integers(1, 9),
    cuts=st.lists(st.integers(0, 120), max_size=5),
    seed=st.integers(0, 10**6),
)
def test_metric_over_batches_agrees_exactly_with_the_pure_function(device, n_classes, cuts, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (120, n_classes), generator=gen).float()  # integer scores: many ties
    targets = torch.randint(0, n_classes, (120,), generator=gen)
    metric = TopKAccuracy(n_classes, ks=(1, 3, 5))
    bounds = [0, *sorted(cuts), 120]
    for a, b in zip(bounds[:-1], bounds[1:]):
        metric.update(scores[a:b].to(device), targets[a:b].to(device))
    assert metric.counts.device.type == device
    got, expected = metric.compute(), per_class_topk(scores, targets, ks=(1, 3, 5))
    assert got.table.equals(expected.table)
    assert got.macro == pytest.approx(expected.macro, nan_ok=True) and got.micro == expected.micro
    assert got.k_used == expected.k_used
    metric.reset()
    assert metric.n_items == 0 and int(metric.hits.sum()) == 0


def test_metric_raises_when_scores_have_the_wrong_number_of_classes():
    with pytest.raises(ValueError, match="scores have 3 columns but the metric was built for 4 classes"):
        TopKAccuracy(4).update(torch.zeros(2, 3), torch.tensor([0, 1]))


# --- buckets and confidence intervals --------------------------------------------------------------


def test_buckets_follow_the_imagenet_lt_thresholds():
    n_train = [0, 1, 19, 20, 21, 99, 100, 101, 5000]
    assert assign_buckets(n_train).tolist() == ["few"] * 3 + ["medium"] * 4 + ["many"] * 2


def test_bucket_means_skip_classes_without_test_items_and_report_empty_buckets_as_nan():
    means = bucket_means([0.5, 1.0, float("nan"), 0.2, 0.4], [3, 10, 500, 150, 250])
    assert means["few"] == pytest.approx(0.75)
    assert means["many"] == pytest.approx(0.3)
    assert math.isnan(means["medium"])
    with pytest.raises(ValueError, match="got 2 accuracies but 3 n_train values"):
        bucket_means([0.1, 0.2], [1, 2, 3])


def test_result_buckets_use_the_table_column():
    scores = torch.eye(4)[[0, 1, 2, 3, 0]]
    targets = torch.tensor([0, 1, 2, 3, 3])
    result = per_class_topk(scores, targets, ks=(1,))
    assert result.buckets([200, 5, 50, 30]) == {"many": 1.0, "medium": pytest.approx(0.75), "few": 1.0}


def test_episodic_accuracy_is_mean_and_196_sample_std_over_sqrt_n():
    acc = np.random.default_rng(0).uniform(0.3, 1.0, 1000)
    mean, ci95 = episodic_accuracy(torch.as_tensor(acc))
    assert mean == pytest.approx(acc.mean())
    assert ci95 == pytest.approx(1.96 * acc.std(ddof=1) / math.sqrt(1000))
    assert math.isnan(episodic_accuracy([0.5])[1])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        episodic_accuracy([])


# --- episodic evaluation ---------------------------------------------------------------------------


def clustered_features(n_classes: int, per_class: int, dim: int, spread: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=gen)]
    centres = torch.randn(n_classes, dim, generator=gen, dtype=torch.float64)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=gen, dtype=torch.float64)
    return feats + 0.7, labels.numpy()  # shifted off the origin so that centring matters


def reference_episodic(feats, labels, sampler, normalize, base_mean, distance) -> np.ndarray:
    """One episode at a time from the sampler's index lists; prototypes and distances spelled out."""
    if normalize == "cl2n":
        feats = feats - base_mean
    if normalize != "none":
        feats = feats / feats.norm(dim=1, keepdim=True)
    way, shot, query = sampler.n_way, sampler.n_shot, sampler.n_query
    out = []
    for indices in sampler:
        support = feats[indices[: way * shot]].reshape(way, shot, -1)
        queries = feats[indices[way * shot :]]
        protos = support.mean(dim=1)
        if distance == "euclidean":
            pred = torch.cdist(queries, protos).argmin(dim=1)
        else:
            pred = torch.nn.functional.cosine_similarity(queries[:, None], protos[None], dim=-1).argmax(dim=1)
        out.append((pred == torch.arange(way).repeat_interleave(query)).double().mean().item())
    return np.array(out)


@pytest.mark.parametrize("normalize", ["none", "l2n", "cl2n"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_episodic_eval_equals_a_per_episode_reference(normalize, distance):
    feats, labels = clustered_features(12, 30, 16, spread=2.0, seed=1)
    base_mean = feats[:100].mean(dim=0) if normalize == "cl2n" else None
    sampler = EpisodeSampler(labels, 5, 3, 7, 300, seed=4)
    result = episodic_eval(
        feats, labels, sampler, normalize=normalize, base_mean=base_mean, distance=distance, chunk_size=64,
        device="cpu", progress=False,
    )
    expected = reference_episodic(feats, labels, sampler, normalize, base_mean, distance)
    np.testing.assert_array_equal(result.accuracies, expected)
    assert 0.3 < result.mean < 0.99  # a task neither trivial nor hopeless, so mistakes are compared too
    assert (result.mean, result.ci95) == pytest.approx(episodic_accuracy(expected))


@pytest.mark.parametrize("device", DEVICES)
def test_episodic_eval_does_not_depend_on_chunking_prefetch_or_device(device):
    feats, labels = clustered_features(10, 25, 8, spread=1.5, seed=2)
    feats = feats.float()
    sampler = EpisodeSampler(labels, 5, 1, 5, 500, seed=7)
    runs = [
        episodic_eval(feats, labels, sampler, chunk_size=c, prefetch=p, device=device, progress=False).accuracies
        for c, p in [(None, True), (7, True), (500, False), (33, False)]
    ]
    for acc in runs[1:]:
        np.testing.assert_array_equal(acc, runs[0])


def test_episodic_eval_is_near_perfect_on_separated_clusters_and_chance_on_noise():
    feats, labels = clustered_features(10, 40, 32, spread=0.05, seed=3)
    sampler = EpisodeSampler(labels, 5, 5, 15, 400, seed=0)
    assert episodic_eval(feats, labels, sampler, device="cpu", progress=False).mean == 1.0
    noise = torch.randn(feats.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    result = episodic_eval(noise, labels, sampler, device="cpu", progress=False)
    assert abs(result.mean - 0.2) < 3 * result.ci95


def test_episodic_eval_uses_the_samplers_current_epoch():
    feats, labels = clustered_features(8, 20, 8, spread=2.0, seed=5)
    sampler = EpisodeSampler(labels, 4, 1, 3, 50, seed=1)
    first = episodic_eval(feats, labels, sampler, progress=False, device="cpu").accuracies
    sampler.set_epoch(1)
    second = episodic_eval(feats, labels, sampler, progress=False, device="cpu").accuracies
    np.testing.assert_array_equal(second, reference_episodic(feats, labels, sampler, "none", None, "euclidean"))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"normalize": "cl2n"}, "normalize='cl2n' needs base_mean"),
        ({"normalize": "cl2n", "base_mean": torch.zeros(3)}, r"base_mean has shape \(3,\), features have d=8"),
        ({"normalize": "none", "base_mean": torch.zeros(8)}, "base_mean is only used with normalize='cl2n'"),
        ({"normalize": "zscore"}, "unknown normalisation .zscore.; known: none, l2n, cl2n"),
        ({"distance": "manhattan"}, "distance='manhattan' is not one of"),
    ],
)
def test_episodic_eval_raises_on_bad_options(kwargs, message):
    feats, labels = clustered_features(6, 10, 8, spread=1.0, seed=0)
    sampler = EpisodeSampler(labels, 3, 1, 1, 5, seed=0)
    with pytest.raises(ValueError, match=message):
        episodic_eval(feats, labels, sampler, progress=False, device="cpu", **kwargs)


@pytest.mark.parametrize("evaluate", ["episodic_eval", "episodic_class_accuracy"])
def test_episodic_evaluators_raise_on_mismatched_inputs(evaluate):
    import fewshot.evaluation as ev

    def run(*args, **kwargs):
        extra = {"progress": False} if evaluate == "episodic_eval" else {}
        return getattr(ev, evaluate)(*args, **extra, **kwargs)

    feats, labels = clustered_features(6, 10, 8, spread=1.0, seed=0)
    sampler = EpisodeSampler(labels, 3, 1, 1, 5, seed=0)
    with pytest.raises(ValueError, match=r"features must be \[60, d\]"):
        run(feats[:10], labels, sampler)
    with pytest.raises(ValueError, match="labels differ from the labels the sampler was built on"):
        run(feats, np.roll(labels, 1), sampler)
    with pytest.raises(ValueError, match="needs a fixed-shape EpisodeSampler, got VariableEpisodeSampler"):
        run(feats, labels, VariableEpisodeSampler(labels, 3, seed=0))
    with pytest.raises(ValueError, match="distance='manhattan' is not one of"):
        run(feats, labels, sampler, distance="manhattan")


def test_prototype_accuracy_breaks_ties_toward_the_lower_way():
    support = torch.zeros(1, 2, 1, 2)  # two identical prototypes
    query = torch.ones(1, 2, 2)  # one query per way, equidistant from both
    assert prototype_accuracy(support, query).tolist() == [0.5]
    assert prototype_accuracy(support + 1, query, "cosine").tolist() == [0.5]


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_prototype_accuracy_decides_like_the_methods_exact_scores(distance):
    from fewshot.methods.functional import centroid_scores

    gen = torch.Generator().manual_seed(0)
    support = torch.randn(50, 5, 3, 8, generator=gen, dtype=torch.float64)
    query = torch.randn(50, 5 * 4, 8, generator=gen, dtype=torch.float64)
    pred = centroid_scores(query, support.mean(2), distance).argmax(-1)  # [E, W*Q], exact scores
    expected = (pred == torch.arange(5).repeat_interleave(4)).double().mean(1)
    assert 0 < expected.mean() < 1
    torch.testing.assert_close(prototype_accuracy(support, query, distance), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("normalize", "distance"), [("none", "euclidean"), ("l2n", "cosine"), ("cl2n", "euclidean")])
def test_episodic_class_accuracy_is_consistent_with_episodic_eval_and_a_loop(normalize, distance):
    from fewshot.evaluation import episodic_class_accuracy, normalize_features

    g = torch.Generator().manual_seed(4)
    labels = np.repeat(np.arange(7), 25)
    feats = torch.randn(len(labels), 6, generator=g) + torch.from_numpy(labels).float()[:, None] * 0.3
    base = feats.mean(0) if normalize == "cl2n" else None
    sampler = EpisodeSampler(labels, 4, 2, 3, 150, seed=5)
    per_class = episodic_class_accuracy(feats, labels, sampler, normalize=normalize, base_mean=base,
                                        distance=distance, chunk_size=37)
    overall = episodic_eval(feats, labels, sampler, normalize=normalize, base_mean=base, distance=distance,
                            device="cpu", progress=False)
    # reference: a plain loop over episodes and queries
    normed = normalize_features(feats, normalize, base)
    hits, seen = np.zeros(7), np.zeros(7)
    for ep in sampler.sample_batch(0, 150):
        protos = torch.stack([normed[torch.from_numpy(ep[w, :2])].mean(0) for w in range(4)])
        for w in range(4):
            for q in ep[w, 2:]:
                x = normed[int(q)]
                if distance == "euclidean":
                    pred = int(torch.argmin(((protos - x) ** 2).sum(1)))
                else:
                    pred = int(torch.argmax(torch.nn.functional.cosine_similarity(protos, x[None], dim=1)))
                hits[labels[q]] += pred == w
                seen[labels[q]] += 1
    assert per_class == pytest.approx({c: hits[c] / seen[c] for c in range(7) if seen[c]}, abs=1e-12)
    weighted = sum(per_class[c] * seen[c] for c in per_class) / seen.sum()
    assert weighted == pytest.approx(overall.mean, abs=1e-12)
