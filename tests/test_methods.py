from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fewshot.methods import NearestCentroid, ProtoNet, create_method
from fewshot.methods.functional import centroid_scores, class_means, normalize_features
from fewshot.methods.protonet import episode_logits, episode_loss


def _brute_force_centroid(support, labels, query, normalize, base_mean, distance):
    """Nearest-centroid scores with plain Python loops, straight from the definitions."""
    def norm(v):
        if normalize == "cl2n":
            v = [a - b for a, b in zip(v, base_mean)]
        if normalize in ("l2n", "cl2n"):
            length = math.sqrt(sum(a * a for a in v))
            v = [a / length for a in v]
        return v

    sup = [norm(row) for row in support.tolist()]
    n_classes = max(labels.tolist()) + 1
    protos = []
    for c in range(n_classes):
        members = [s for s, y in zip(sup, labels.tolist()) if y == c]
        protos.append([sum(col) / len(members) for col in zip(*members)])
    out = []
    for q in (norm(row) for row in query.tolist()):
        row = []
        for p in protos:
            if distance == "euclidean":
                row.append(-sum((a - b) ** 2 for a, b in zip(q, p)))
            else:
                dot = sum(a * b for a, b in zip(q, p))
                row.append(dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in p))))
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("normalize", ["none", "l2n", "cl2n"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1])
def test_nearest_centroid_equals_brute_force_reference(normalize, distance, seed):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(23, 6, generator=g, dtype=torch.float64)
    labels = torch.cat([torch.arange(5), torch.randint(0, 5, (18,), generator=g)])
    query = torch.randn(11, 6, generator=g, dtype=torch.float64)
    base_mean = torch.randn(6, generator=g, dtype=torch.float64) * 0.3
    model = NearestCentroid(normalize=normalize, base_mean=base_mean if normalize == "cl2n" else None,
                            distance=distance)
    got = model.fit(support, labels).scores(query)
    want = _brute_force_centroid(support, labels, query, normalize, base_mean.tolist(), distance)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_fitting_twice_gives_the_same_state_and_scoring_changes_nothing():
    g = torch.Generator().manual_seed(3)
    x, y, q = torch.randn(20, 4, generator=g), torch.arange(20) % 4, torch.randn(5, 4, generator=g)
    model = NearestCentroid(normalize="l2n").fit(x, y)
    first = model.prototypes.clone()
    model.fit(x, y)
    assert torch.equal(first, model.prototypes)
    s1, s2 = model(q), model.scores(q)
    assert torch.equal(s1, s2) and torch.equal(model.prototypes, first)


def test_protonet_is_nearest_mean_under_squared_euclidean():
    x = torch.tensor([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    scores = ProtoNet().fit(x, y).scores(torch.tensor([[0.0, 1.0], [9.0, 0.0]]))
    torch.testing.assert_close(scores, torch.tensor([[0.0, -101.0], [-82.0, -1.0]]))


def test_methods_accept_images_through_a_backbone():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8))
    images = torch.rand(6, 3, 4, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    model = ProtoNet(backbone).fit(images, labels)
    feats = backbone(images).detach()
    torch.testing.assert_close(model.scores(images[:2]), ProtoNet().fit(feats, labels).scores(feats[:2]))


def test_uint8_images_go_through_preprocess():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
    seen = {}

    def preprocess(x):
        seen["dtype"] = x.dtype
        return x.float() / 255

    images = torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.uint8)
    NearestCentroid(backbone, preprocess=preprocess).fit(images, torch.tensor([0, 1, 0, 1]))
    assert seen["dtype"] == torch.uint8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: NearestCentroid(normalize="cl2n"), "needs base_mean"),
        (lambda: NearestCentroid(normalize="zscore"), "unknown normalisation 'zscore'; known: none, l2n, cl2n"),
        (lambda: NearestCentroid(distance="manhattan"), "unknown distance 'manhattan'; known: euclidean, cosine"),
        (lambda: create_method("reptile"), "unknown method 'reptile'; known: anil, centroid, crt, logit_adjust, maml, protonet, tau_norm"),
        (lambda: NearestCentroid().scores(torch.zeros(2, 3)), "call fit"),
        (lambda: NearestCentroid().fit(torch.zeros(3, 2), torch.tensor([0, 2, 2])), r"classes \[1\] have no support"),
        (lambda: NearestCentroid().fit(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1])), "has no backbone"),
        (lambda: NearestCentroid().fit(torch.zeros(2, 3, 4), torch.tensor([0, 1])), "expected features"),
    ],
)
def test_bad_inputs_raise_with_a_useful_message(call, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        call()


def test_normalize_features_cl2n_centres_then_unit_norm():
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    out = normalize_features(x, "cl2n", torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(out[0], torch.tensor([0.5547, 0.8321]), atol=1e-4, rtol=0)
    assert torch.allclose(out.norm(dim=1)[0], torch.tensor(1.0))


def test_centroid_scores_broadcast_over_episodes_like_a_loop():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(7, 5, 3, generator=g), torch.randn(7, 4, 3, generator=g)
    batched = centroid_scores(q, p)
    looped = torch.stack([-torch.cdist(q[i], p[i]) ** 2 for i in range(7)])
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("leading", [(), (6,), (2, 3)])
def test_centroid_score_options_keep_each_querys_ranking(distance, leading):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(*leading, 9, 4, generator=g, dtype=torch.float64) + 0.5
    p = torch.randn(*leading, 5, 4, generator=g, dtype=torch.float64)
    exact = centroid_scores(q, p, distance)
    torch.testing.assert_close(centroid_scores(q, p, distance, classes_first=True), exact.transpose(-1, -2))
    ranking = centroid_scores(q, p, distance, exact=False, classes_first=True).transpose(-1, -2)
    # the dropped term is the same for every prototype of a query: |q|^2 (euclidean) or a 1/|q| factor (cosine)
    qn = q.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(ranking, exact * qn if distance == "cosine" else exact + qn**2)
    assert torch.equal(ranking.argmax(-1), exact.argmax(-1))


def test_centroid_scores_refuse_an_unknown_distance():
    with pytest.raises(ValueError, match="unknown distance 'manhattan'; known: euclidean, cosine"):
        centroid_scores(torch.zeros(2, 3), torch.zeros(2, 3), "manhattan", exact=False)


def test_episode_loss_is_differentiable_and_counts_correct_queries():
    support = torch.tensor([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.2, 5.0]], requires_grad=True)
    query = torch.tensor([[0.1, 0.1], [5.0, 4.9], [0.0, 0.3]])
    loss, correct = episode_loss(support, query, torch.tensor([0, 1, 1]), n_way=2, n_shot=2)
    loss.backward()
    assert int(correct) == 2 and support.grad is not None and support.grad.abs().sum() > 0
    assert episode_logits(support, query, 2, 2).shape == (3, 2)


def test_class_means_match_a_loop():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    want = torch.stack([x[y == c].mean(0) for c in range(3)])
    torch.testing.assert_close(class_means(x, y, 3), want)


@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_episode_loss_logit_scale_is_a_temperature_on_the_negative_squared_distances(scale):
    g = torch.Generator().manual_seed(2)
    support, query = torch.randn(6, 4, generator=g) * 5, torch.randn(4, 4, generator=g) * 5
    labels = torch.tensor([0, 1, 2, 0])
    loss, correct = episode_loss(support, query, labels, n_way=3, n_shot=2, logit_scale=scale)
    logits = -torch.cdist(query, support.reshape(3, 2, 4).mean(1)) ** 2 * scale
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels), rtol=1e-4, atol=1e-4)
    assert int(correct) == int((logits.argmax(1) == labels).sum())  # the scale changes no prediction
