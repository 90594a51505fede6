"""The class-stratified bootstrap against a naive loop, exact enumeration and the plain figures."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fewshot.evaluation import BUCKETS, assign_buckets, per_class_topk
from fewshot.evaluation.bootstrap import (
    CHUNK,
    bootstrap_accuracy,
    percentile_interval,
    resample_indices,
    topk_hits,
)


def _case(seed: int, n: int = 60, n_classes: int = 6, m: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(n_classes - 1, size=n)  # the last class has no test images
    return rng.random((n, m)) < 0.5, targets


def _naive(hits: np.ndarray, targets: np.ndarray, n_classes: int, drawn: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-resample macro and micro by a plain loop over resamples and classes of the drawn image indices."""
    macro, micro = [], []
    for row in drawn:
        resampled = hits[row]  # resampled[j] = hits of the image drawn in image j's place
        accs = [resampled[targets == c].mean(axis=0) for c in range(n_classes) if (targets == c).any()]
        macro.append(np.mean(accs, axis=0))
        micro.append(resampled.mean(axis=0))
    return np.array(macro), np.array(micro)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_resamples", [1, 7, CHUNK + 3])  # one chunk, and a second, partial one
def test_fast_path_reproduces_a_naive_loop_over_the_drawn_images(seed: int, n_resamples: int) -> None:
    hits, targets = _case(seed)
    drawn = resample_indices(targets, 6, n_resamples, seed=seed)
    macro, micro = _naive(hits, targets, 6, drawn)
    out = bootstrap_accuracy(hits, targets, 6, n_resamples=n_resamples, seed=seed)
    np.testing.assert_allclose(out.draws["macro"], macro, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.draws["micro"], micro, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_every_resample_keeps_each_class_and_its_count(seed: int) -> None:
    _, targets = _case(seed, n=80)
    drawn = resample_indices(targets, 6, 50, seed=seed)
    assert (targets[drawn] == targets[None, :]).all()  # each image is replaced by one of its own class
    for row in drawn:
        np.testing.assert_array_equal(np.bincount(targets[row], minlength=6), np.bincount(targets, minlength=6))


@pytest.mark.parametrize("pattern", [((1, 0), (1, 1, 0)), ((1, 1), (0, 0, 1)), ((0, 1), (1, 0, 0))])
def test_bootstrap_mean_and_variance_match_exact_enumeration(pattern: tuple[tuple[int, ...], ...]) -> None:
    # Two classes of 2 and 3 images: every ordered resample of each class, each with probability n^-n.
    per_class = []
    for hits_c in pattern:
        n = len(hits_c)
        per_class.append([np.mean([hits_c[i] for i in draw]) for draw in itertools.product(range(n), repeat=n)])
    macro = np.array([(a + b) / 2 for a in per_class[0] for b in per_class[1]])
    exact_mean, exact_var = macro.mean(), macro.var()
    hits = np.concatenate(pattern).astype(bool)[:, None]
    targets = np.repeat([0, 1], [len(p) for p in pattern])
    r = 20_000
    draws = bootstrap_accuracy(hits, targets, 2, n_resamples=r, seed=5).draws["macro"][:, 0]
    assert abs(draws.mean() - exact_mean) < 4 * np.sqrt(exact_var / r)  # 4 standard errors
    assert abs(draws.var() - exact_var) < 0.05 * exact_var  # the sampling error of a variance at r = 20,000


def test_point_figures_equal_the_plain_evaluation_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(300, 12, generator=gen)
    targets = torch.randint(0, 11, (300,), generator=gen)  # class 11 has no test images
    hits = topk_hits(scores, targets, ks=(1, 5))
    n_train = np.arange(12) * 13  # some classes in each of the Many / Medium / Few buckets
    buckets = {b: np.flatnonzero(assign_buckets(n_train) == b) for b in BUCKETS}
    out = bootstrap_accuracy(hits, targets.numpy(), 12, n_resamples=10, class_subsets=buckets)
    plain = per_class_topk(scores, targets, ks=(1, 5))
    assert out.point["macro"].tolist() == [plain.macro["top1"], plain.macro["top5"]]
    assert out.point["micro"].tolist() == [plain.micro["top1"], plain.micro["top5"]]
    for name, value in plain.buckets(n_train, "top1").items():
        assert out.point[name][0] == value and not np.isnan(value)


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    hits, targets = _case(0)
    a, b = (bootstrap_accuracy(hits, targets, 6, n_resamples=50, seed=s).draws["macro"] for s in (4, 4))
    c = bootstrap_accuracy(hits, targets, 6, n_resamples=50, seed=5).draws["macro"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_paired_difference_of_identical_columns_is_exactly_zero() -> None:
    hits, targets = _case(1)
    out = bootstrap_accuracy(np.concatenate([hits, hits[:, :1]], axis=1), targets, 6, n_resamples=200)
    for figure in ("macro", "micro"):
        assert (out.difference(0, 3, figure) == 0).all()
        assert out.difference(0, 1, figure).any()


def test_empty_subset_is_nan_and_interval_brackets_the_point() -> None:
    hits, targets = _case(2, n=400)
    out = bootstrap_accuracy(hits, targets, 6, n_resamples=500, class_subsets={"none": [5], "two": [0, 1]})
    assert np.isnan(out.point["none"]).all() and np.isnan(out.draws["none"]).all()  # class 5 has no images
    low, high = out.interval("two")
    assert (low <= out.point["two"]).all() and (out.point["two"] <= high).all()


def test_percentile_interval_matches_numpy_quantiles() -> None:
    draws = np.random.default_rng(0).normal(size=(1001, 2))
    low, high = percentile_interval(draws, 0.9)
    np.testing.assert_allclose(low, np.quantile(draws, 0.05, axis=0))
    np.testing.assert_allclose(high, np.quantile(draws, 0.95, axis=0))


@pytest.mark.parametrize("change, match", [
    (dict(targets=np.array([0, 1, 6])), "targets must lie in"),
    (dict(targets=np.array([0, -1, 2])), "targets must lie in"),
    (dict(targets=np.array([0, 1])), "to match hits"),
    (dict(targets=np.array([0.0, 1.0, 2.0])), "integer class indices"),
    (dict(hits=np.array([0, 1, 1])), "n_images, n_columns"),
    (dict(hits=np.array([[0], [2], [1]])), "0/1"),
    (dict(n_resamples=0), "n_resamples"),
    (dict(class_subsets={"macro": [0]}), "reserved"),
    (dict(class_subsets={"x": [9]}), "outside"),
])
def test_bad_inputs_raise_one_clear_value_error(change: dict, match: str) -> None:
    args = dict(hits=np.array([[1], [0], [1]]), targets=np.array([0, 1, 2]), n_resamples=5, class_subsets=None)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        bootstrap_accuracy(args["hits"], args["targets"], 6, n_resamples=args["n_resamples"],
                           class_subsets=args["class_subsets"])
