"""Image+text late fusion: temperature scaling, the gate and product rules, the LateFusion method."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot.data.validation import validation_split
from fewshot.methods import LateFusion, NearestCentroid, TextHead
from fewshot.methods.fusion_functional import (
    DEFAULT_WEIGHTS,
    choose_threshold,
    choose_weight,
    fit_temperature,
    gate_fusion,
    macro_top1,
    nll,
    product_fusion,
)


def _overconfident(n: int = 400, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits right 70% of the time but scaled as if always right: temperature scaling must soften them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    guess = torch.where(torch.rand(n, generator=g) < 0.7, y, torch.randint(0, c, (n,), generator=g))
    return 8.0 * torch.nn.functional.one_hot(guess, c).float() + 0.1 * torch.randn(n, c, generator=g), y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temperature_scaling_lowers_validation_nll(seed):
    logits, y = _overconfident(seed=seed)
    t = fit_temperature(logits, y)
    assert t > 1.5
    assert nll(logits, y, t) < 0.8 * nll(logits, y)
    held_out_logits, held_out_y = _overconfident(seed=seed + 10)  # the same miscalibration, new items
    assert nll(held_out_logits, held_out_y, t) < nll(held_out_logits, held_out_y)


def test_temperature_stays_one_when_scaling_cannot_help():
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert fit_temperature(logits, torch.tensor([0, 1])) == 1.0


def test_product_of_a_uniform_text_row_is_the_image_distribution():
    image = torch.log_softmax(torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]), 1)
    uniform = torch.log_softmax(torch.zeros(2, 3), 1)
    torch.testing.assert_close(product_fusion(image, uniform), image)


def test_product_multiplies_probabilities_and_renormalises():
    image = torch.log(torch.tensor([[0.5, 0.5]]))
    text = torch.log(torch.tensor([[0.9, 0.1]]))
    torch.testing.assert_close(product_fusion(image, text).exp(), torch.tensor([[0.9, 0.1]]))


def test_gate_uses_text_only_when_the_image_is_unsure_and_the_text_speaks():
    image = torch.log(torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.55, 0.45]]))
    text = torch.log(torch.tensor([[0.0, 1.0], [0.2, 0.8], [0.5, 0.5]]).clamp_min(1e-9))
    out = gate_fusion(image, text, threshold=0.6, abstains=torch.tensor([False, False, True]))
    assert out.argmax(1).tolist() == [0, 1, 0]
    torch.testing.assert_close(out[2], image[2])


def test_choose_threshold_picks_the_best_gate_on_validation():
    # image right on confident items only, text right everywhere: the best gate sends unsure items to text
    y = torch.tensor([0, 1, 0, 1])
    image = torch.log(torch.tensor([[0.95, 0.05], [0.05, 0.95], [0.4, 0.6], [0.6, 0.4]]))
    text = torch.log(torch.tensor([[0.8, 0.2], [0.2, 0.8], [0.8, 0.2], [0.2, 0.8]]))
    primary, threshold, score = choose_threshold(image, text, y)
    assert primary == "image" and 0.6 < threshold <= 0.95 and score == 1.0  # ties: the image first
    assert macro_top1(image, y) == 0.5


def test_the_gate_can_defer_the_other_way_text_unless_unsure():
    # text right when confident, wrong when unsure; the image right only where the text is unsure
    y = torch.tensor([0, 1, 0, 1])
    text = torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.45, 0.55], [0.55, 0.45]]))
    image = torch.log(torch.tensor([[0.2, 0.8], [0.8, 0.2], [0.6, 0.4], [0.4, 0.6]]))  # sure when wrong
    primary, threshold, score = choose_threshold(image, text, y)
    assert primary == "text" and 0.55 < threshold <= 0.9 and score == 1.0
    fused = gate_fusion(image, text, threshold, primary="text")
    assert fused.argmax(1).tolist() == y.tolist()


def test_the_weighted_product_picks_the_weight_that_scores_best_and_matches_the_plain_product_at_one_half():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    image = torch.log_softmax(torch.randn(200, 4, generator=g) + 3 * F.one_hot(y, 4), 1)  # informative
    text = torch.log_softmax(torch.randn(200, 4, generator=g), 1)  # noise
    weight, score = choose_weight(image, text, y)
    assert weight >= 0.75 and score == max(macro_top1(product_fusion(image, text, w), y) for w in DEFAULT_WEIGHTS)
    torch.testing.assert_close(product_fusion(image, text, 0.5), torch.log_softmax(image + text, 1))
    assert torch.equal(product_fusion(image, text, 1.0).argmax(1), image.argmax(1))


def _two_view_data(n_per_class: int = 30, seed: int = 0, empty_every: int = 4):
    """Image features that separate classes 0/1 from 2, text features that separate 0 from 1; every
    ``empty_every``-th item has no name (zero text row)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n_per_class)
    image_means = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    text_means = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    image = image_means[y] + 0.3 * torch.randn(len(y), 2, generator=g)
    text = text_means[y] + 0.1 * torch.rand(len(y), 3, generator=g)
    text[::empty_every] = 0
    return torch.cat([image, text], 1), y


@pytest.mark.parametrize("rule", ["gate", "product"])
def test_late_fusion_beats_the_image_alone_and_equals_it_when_the_text_abstains(rule):
    x, y = _two_view_data()
    fusion = LateFusion(NearestCentroid(), NearestCentroid(normalize="l2n", distance="cosine"), image_dim=2,
                        rule=rule, seed=0).fit(x, y)
    xq, yq = _two_view_data(seed=1)
    fused = fusion.fused(xq)
    # the image cannot tell 0 from 1 (half of their items right), the text can where there is a name
    assert macro_top1(fused["image"], yq) < 0.7
    assert macro_top1(fused[rule], yq) > macro_top1(fused["image"], yq) + 0.1
    silent = (xq[:, 2:] == 0).all(1)
    assert silent.any()
    assert torch.equal(fused[rule][silent].argmax(1), fused["image"][silent].argmax(1))
    torch.testing.assert_close(fused["product"][silent], fused["image"][silent])
    assert set(fusion.chosen) >= {"image_temperature", "text_temperature", "gate_primary", "threshold", "image_weight",
                                  "at_grid_edge", "val_macro_top1"}


def test_late_fusion_flags_a_setting_chosen_at_the_edge_of_its_grid():
    x, y = _two_view_data()
    heads = (NearestCentroid(), NearestCentroid(normalize="l2n", distance="cosine"))
    edges = LateFusion(*heads, image_dim=2, seed=0, weights=(0.0, 1.0), thresholds=(0.5,)).fit(x, y)
    assert edges.chosen["at_grid_edge"] == ["image_weight"]  # two points are both edges; one point is no choice
    inside = LateFusion(*heads, image_dim=2, seed=0, weights=(0.0, 0.5, 1.0), thresholds=(0.5,)).fit(x, y)
    assert (inside.chosen["image_weight"] == 0.5) == ("image_weight" not in inside.chosen["at_grid_edge"])


def test_late_fusion_holds_out_whole_groups_when_given_them():
    x, y = _two_view_data()
    groups = np.arange(len(y)) // 5  # blocks of five items of one class
    fusion = LateFusion(NearestCentroid(), NearestCentroid(), image_dim=2, seed=0).fit(x, y, groups=groups)
    train, val = validation_split(y.numpy(), 0.2, 0, groups=groups)
    assert fusion.chosen["val_items"] == len(val) and not set(groups[train]) & set(groups[val])


def test_late_fusion_fit_twice_gives_the_same_scores_and_wraps_the_text_head():
    x, y = _two_view_data()
    fusion = LateFusion(NearestCentroid(), NearestCentroid(), image_dim=2, seed=0)
    assert isinstance(fusion.text_head, TextHead)
    first = fusion.fit(x, y).scores(x)
    torch.testing.assert_close(fusion.fit(x, y).scores(x), first)


@pytest.mark.parametrize("kwargs, message", [({"rule": "sum"}, "unknown fusion rule 'sum'"),
                                             ({"image_dim": 0}, "image_dim=0")])
def test_late_fusion_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LateFusion(NearestCentroid(), NearestCentroid(), **{"image_dim": 2, **kwargs})


def test_late_fusion_rejects_features_without_a_text_part():
    with pytest.raises(ValueError, match="image_dim=2"):
        LateFusion(NearestCentroid(), NearestCentroid(), image_dim=2).fit(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))
