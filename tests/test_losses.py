from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.training.losses import (
    CLASS_WEIGHTS,
    balanced_sample_weights,
    class_counts,
    class_weights,
    effective_number_weights,
    inverse_frequency_weights,
)

COUNTS = [[5, 1, 20], [400, 3, 1, 57, 9], [7, 7, 7], [1000, 1]]


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("counts", COUNTS)
def test_class_counts_match_a_python_count(counts):
    labels = np.random.default_rng(0).permutation(_labels(counts))
    assert class_counts(labels, len(counts) + 2).tolist() == counts + [0, 0]


@pytest.mark.parametrize("counts", COUNTS)
def test_inverse_frequency_weights_are_the_seeds_max_over_count(counts):
    expected = [max(counts) / n for n in counts]
    np.testing.assert_allclose(inverse_frequency_weights(torch.tensor(counts)).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("counts", COUNTS)
@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_effective_number_weights_follow_cui_et_al_and_sum_to_the_class_count(counts, beta):
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [r * len(counts) / sum(raw) for r in raw]
    weights = effective_number_weights(torch.tensor(counts), beta)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-5)
    assert weights.sum().item() == pytest.approx(len(counts), rel=1e-5)


def test_effective_number_weights_interpolate_between_uniform_and_inverse_frequency():
    counts = torch.tensor([500, 50, 5])
    assert torch.allclose(effective_number_weights(counts, 0.0), torch.ones(3))
    inverse = inverse_frequency_weights(counts)
    near_one = effective_number_weights(counts, 1 - 1e-9)
    torch.testing.assert_close(near_one / near_one.sum(), inverse / inverse.sum(), rtol=1e-3, atol=0)
    middle = effective_number_weights(counts, 0.999)
    assert middle[2] / middle[0] < inverse[2] / inverse[0] and middle[2] > middle[1] > middle[0]


@pytest.mark.parametrize("kind", ["inverse", "effective"])
def test_empty_classes_get_zero_weight_and_do_not_break_normalisation(kind):
    weights = class_weights(_labels([3, 0, 9]), 3, kind)
    assert weights[1] == 0 and torch.isfinite(weights).all() and (weights[[0, 2]] > 0).all()


def test_class_weights_by_name_dispatch_to_the_pure_functions():
    labels = _labels([4, 2, 1])
    counts = torch.tensor([4, 2, 1])
    assert class_weights(labels, 3, "none") is None
    assert torch.equal(class_weights(labels, 3, "inverse"), inverse_frequency_weights(counts))
    assert torch.equal(class_weights(labels, 3, "effective", 0.99), effective_number_weights(counts, 0.99))


def test_unknown_class_weight_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: " + ", ".join(CLASS_WEIGHTS)):
        class_weights([0, 1], 2, "focal")


@pytest.mark.parametrize("labels,n_classes", [([0, 3], 3), ([-1, 0], 2)])
def test_labels_outside_the_class_range_are_rejected(labels, n_classes):
    with pytest.raises(ValueError, match="remap"):
        class_counts(labels, n_classes)


@pytest.mark.parametrize("beta", [-0.1, 1.0])
def test_effective_number_beta_outside_unit_interval_is_rejected(beta):
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights(torch.tensor([1, 2]), beta)


@pytest.mark.parametrize("counts", COUNTS)
def test_balanced_sample_weights_give_every_class_the_same_mass(counts):
    labels = _labels(counts)
    w = balanced_sample_weights(labels)
    per_class = np.bincount(labels, weights=w.numpy())
    np.testing.assert_allclose(per_class, np.ones(len(counts)))


def test_balanced_sampling_draws_classes_uniformly_from_imbalanced_labels():
    labels = _labels([900, 90, 9, 1])
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(balanced_sample_weights(labels), 40_000, replacement=True, generator=g)
    freq = np.bincount(labels[draws.numpy()], minlength=4) / 40_000
    np.testing.assert_allclose(freq, 0.25, atol=0.01)  # sd ~0.002 per class
