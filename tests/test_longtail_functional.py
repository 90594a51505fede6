from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fewshot.evaluation import top1_accuracy
from fewshot.methods.linear_training import class_balanced_indices, select_on_validation, train_linear
from fewshot.methods.longtail_functional import (
    adjust_logits,
    log_prior,
    logit_adjusted_cross_entropy,
    macro_top1,
    tau_norm_scale,
    tau_normalize,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNTS = [[5, 1, 20], [400, 3, 1, 57, 9], [7, 7, 7]]


def _labels(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


# ---- tau-normalisation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_tau_normalize_divides_each_row_by_its_norm_to_the_tau(tau):
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = torch.stack([row / math.sqrt(sum(v * v for v in row.tolist())) ** tau for row in w])
    torch.testing.assert_close(tau_normalize(w, tau), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(tau_norm_scale(w, tau), want.norm(dim=1) / w.norm(dim=1), rtol=1e-12, atol=0)


def test_tau_zero_returns_the_weights_and_tau_one_unit_rows_and_zero_rows_stay_zero():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    assert tau_normalize(w, 0.0) is w
    out = tau_normalize(w, 1.0)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="tau=-0.5 must be >= 0"):
        tau_normalize(w, -0.5)


# ---- priors and logit adjustment -------------------------------------------------------------------------

@pytest.mark.parametrize("counts", COUNTS)
def test_log_prior_is_the_log_of_the_class_frequencies(counts):
    want = torch.tensor([math.log(c / sum(counts)) for c in counts], dtype=torch.float64)
    torch.testing.assert_close(log_prior(torch.tensor(counts), torch.float64), want, rtol=1e-12, atol=0)
    assert log_prior(torch.tensor(counts)).dtype == torch.get_default_dtype()


def test_an_empty_class_counts_as_one_item_not_minus_infinity():
    prior = log_prior(torch.tensor([8, 0, 2]), torch.float64)
    torch.testing.assert_close(prior, torch.tensor([math.log(0.8), math.log(0.1), math.log(0.2)], dtype=torch.float64))
    loss = logit_adjusted_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]), prior.float())
    assert torch.isfinite(loss)


@pytest.mark.parametrize("counts", [[0, 0], [3, -1], [[1, 2]], []])
def test_log_prior_refuses_counts_without_a_positive_total(counts):
    with pytest.raises(ValueError, match="counts must be"):
        log_prior(torch.tensor(counts))


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.5])
def test_adjust_logits_subtracts_tau_times_the_log_prior(tau):
    g = torch.Generator().manual_seed(1)
    logits, prior = torch.randn(5, 3, generator=g), log_prior(torch.tensor([50, 5, 1]))
    want = torch.tensor([[z - tau * p for z, p in zip(row, prior.tolist())] for row in logits.tolist()])
    torch.testing.assert_close(adjust_logits(logits, prior, tau), want)


def test_a_uniform_prior_shifts_every_logit_by_one_constant():
    logits = torch.randn(20, 4, generator=torch.Generator().manual_seed(2))
    adjusted = adjust_logits(logits, log_prior(torch.full((4,), 9)), 1.3)
    torch.testing.assert_close(adjusted - logits, torch.full_like(logits, 1.3 * math.log(4)))
    assert torch.equal(adjusted.argmax(1), logits.argmax(1))


@pytest.mark.parametrize("counts", COUNTS)
def test_balanced_softmax_is_the_logit_adjusted_loss_at_tau_one(counts):
    """Ren et al. 2020: -log(n_y e^{z_y} / sum_j n_j e^{z_j}), averaged over the batch."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(9, len(counts), generator=g, dtype=torch.float64)
    targets = torch.randint(len(counts), (9,), generator=g)
    manual = [-math.log(counts[t] * math.exp(z[t]) / sum(n * math.exp(v) for n, v in zip(counts, z)))
              for z, t in zip(logits.tolist(), targets.tolist())]
    loss = logit_adjusted_cross_entropy(logits, targets, log_prior(torch.tensor(counts), torch.float64), tau=1.0)
    assert loss.item() == pytest.approx(sum(manual) / len(manual), rel=1e-12)


@pytest.mark.parametrize("tau", [0.0, 0.7])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_logit_adjusted_loss_is_cross_entropy_of_shifted_logits_with_weights_and_smoothing(tau, smoothing):
    g = torch.Generator().manual_seed(4)
    logits, targets = torch.randn(12, 3, generator=g), torch.randint(3, (12,), generator=g)
    prior, weight = log_prior(torch.tensor([30, 6, 1])), torch.tensor([0.2, 1.0, 3.0])
    got = logit_adjusted_cross_entropy(logits, targets, prior, tau, weight=weight, label_smoothing=smoothing)
    want = F.cross_entropy(logits + tau * prior, targets, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(got, want)
    if tau == 0.0:
        assert torch.equal(got, F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_top1_equals_the_evaluators_macro_accuracy(seed):
    g = torch.Generator().manual_seed(seed)
    scores, labels = torch.randn(40, 6, generator=g), torch.randint(0, 5, (40,), generator=g)  # class 5 absent
    assert macro_top1(scores, labels) == pytest.approx(top1_accuracy(scores, labels, "macro"), abs=1e-12)


# ---- class-balanced sampling -----------------------------------------------------------------------------

def test_class_balanced_draws_pick_classes_uniformly_then_items_uniformly():
    labels = _labels([300, 30, 6])[torch.randperm(336, generator=torch.Generator().manual_seed(0))]
    drawn = class_balanced_indices(labels, 60_000, torch.Generator().manual_seed(1))
    class_freq = torch.bincount(labels[drawn], minlength=3).double() / len(drawn)
    torch.testing.assert_close(class_freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0)
    rare = torch.nonzero(labels == 2).flatten()
    per_item = torch.stack([(drawn == i).sum() for i in rare]).double() / len(drawn)
    torch.testing.assert_close(per_item, torch.full((6,), 1 / 18, dtype=torch.float64), atol=0.005, rtol=0)


def test_class_balanced_draws_skip_absent_labels_and_follow_the_generator():
    labels = torch.tensor([0, 0, 0, 4, 4, 7])
    a = class_balanced_indices(labels, 3000, torch.Generator().manual_seed(5))
    b = class_balanced_indices(labels, 3000, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    freq = torch.bincount(labels[a], minlength=8).double() / 3000
    assert set(torch.nonzero(freq).flatten().tolist()) == {0, 4, 7}
    assert (freq[[0, 4, 7]] - 1 / 3).abs().max() < 0.03


# ---- the linear trainer ----------------------------------------------------------------------------------

def _reference_train(x, y, n_classes, *, epochs, lr, batch_size, weight_decay, balanced, prior, tau, bias, seed):
    """Mini-batch Adam on softmax regression written out: hand-made gradients and the Adam update of
    Kingma & Ba 2015 (as torch.optim.Adam with L2 weight decay), the batches drawn as documented."""
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    w, b = torch.zeros(n_classes, d, dtype=x.dtype), torch.zeros(n_classes, dtype=x.dtype)
    if bias:  # the loss's minimiser at W = 0
        if not balanced:
            b = torch.tensor([math.log(max(int((y == c).sum()), 1) / n) for c in range(n_classes)], dtype=x.dtype)
        if prior is not None:
            b = b - tau * prior
    state = {"w": [torch.zeros_like(w), torch.zeros_like(w)], "b": [torch.zeros_like(b), torch.zeros_like(b)]}
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    for _ in range(epochs):
        order = class_balanced_indices(y, n, g) if balanced else torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            pos = order[start:start + batch_size]
            z = x[pos] @ w.T + b + (0 if prior is None else tau * prior)
            p = torch.softmax(z, 1)
            p[torch.arange(len(pos)), y[pos]] -= 1
            p /= len(pos)
            grads = {"w": p.T @ x[pos] + weight_decay * w, "b": p.sum(0)}
            step += 1
            for name, param in (("w", w), ("b", b)) if bias else (("w", w),):
                m, v = state[name]
                m.mul_(beta1).add_((1 - beta1) * grads[name])
                v.mul_(beta2).add_((1 - beta2) * grads[name] ** 2)
                m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
                param -= lr * m_hat / (v_hat.sqrt() + eps)
    return w, b


def _toy(n=30, d=5, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.arange(n_classes), torch.randint(0, n_classes, (n - n_classes,), generator=g)])
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.8 * y.unsqueeze(1).double()
    return x, y


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize(("loss_tau", "bias"), [(None, True), (None, False), (0.5, True), (1.0, True)])
@pytest.mark.parametrize(("batch_size", "weight_decay"), [(7, 0.0), (64, 0.05)])
def test_train_linear_equals_adam_written_out(balanced, loss_tau, bias, batch_size, weight_decay):
    x, y = _toy()
    prior = None if loss_tau is None else log_prior(torch.tensor([3, 9, 18]), torch.float64)
    settings = dict(epochs=4, lr=0.05, batch_size=batch_size, weight_decay=weight_decay, balanced=balanced)
    w, b = train_linear(x, y, 3, **settings, loss_log_prior=prior, loss_tau=loss_tau or 0.0, bias=bias,
                        generator=torch.Generator().manual_seed(7))
    rw, rb = _reference_train(x, y, 3, **settings, prior=prior, tau=loss_tau or 0.0, bias=bias, seed=7)
    # float64; Adam divides by sqrt(v) + 1e-8, which magnifies rounding where a gradient is near zero
    torch.testing.assert_close(w, rw, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(b, rb, rtol=1e-7, atol=1e-9)
    assert bias or not b.any()


def test_k_epochs_are_the_first_k_epochs_of_a_longer_run_as_on_epoch_sees_them():
    x, y = _toy(seed=1)
    seen = {}
    kw = dict(lr=0.05, batch_size=8, weight_decay=0.01)
    train_linear(x, y, 3, epochs=5, **kw, generator=torch.Generator().manual_seed(0),
                 on_epoch=lambda e, w, b: seen.update({e: (w.clone(), b.clone())}))
    assert sorted(seen) == [1, 2, 3, 4, 5]
    for k in (1, 3, 5):
        w, b = train_linear(x, y, 3, epochs=k, **kw, generator=torch.Generator().manual_seed(0))
        assert torch.equal(w, seen[k][0]) and torch.equal(b, seen[k][1])


def test_train_linear_is_a_function_of_its_generator_and_leaves_the_global_rng_alone():
    x, y = _toy(seed=2)
    before = torch.random.get_rng_state()
    runs = [train_linear(x, y, 3, epochs=3, lr=0.05, batch_size=8, balanced=bal,
                         generator=torch.Generator().manual_seed(3)) for bal in (False, False, True)]
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(runs[0][0], runs[1][0]) and not torch.equal(runs[0][0], runs[2][0])


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_train_linear_trains_under_no_grad_and_inference_mode(context):
    x, y = _toy(seed=3)
    want = train_linear(x, y, 3, epochs=2, lr=0.05, batch_size=8, generator=torch.Generator().manual_seed(0))
    with context():
        got = train_linear(x.clone(), y, 3, epochs=2, lr=0.05, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize(("features", "labels"), [(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long)),
                                                  (torch.zeros(3, 2), torch.tensor([0, 1, 2])),
                                                  (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))])
def test_train_linear_refuses_mismatched_shapes_and_labels_out_of_range(features, labels):
    with pytest.raises(ValueError, match=r"features \[n, d\], labels \[n\] in 0..n_classes-1"):
        train_linear(features, labels, 2, generator=torch.Generator())


# ---- choosing on validation ------------------------------------------------------------------------------

def test_selection_takes_the_first_best_in_grid_order_then_the_earliest_epoch():
    good, half, bad = torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    runs = {0.1: [bad, half, half], 0.2: [half, good, good], 0.3: [good, good, good]}
    calls = []

    def train(weight_decay, loss_tau, on_epoch):
        calls.append((weight_decay, loss_tau))
        for epoch, w in enumerate(runs[weight_decay], 1):
            on_epoch(epoch, w, torch.zeros(2))

    def post_hoc(logits, w, b, tau):  # tau 2 predicts class 0 everywhere: macro top-1 0.5
        return logits if tau == 1 else torch.zeros_like(logits)

    best = select_on_validation(train, post_hoc, torch.eye(2), torch.tensor([0, 1]), (0.1, 0.2, 0.3), (None,), (1, 2))
    assert best == {"weight_decay": 0.2, "epochs": 2, "val_macro_top1": 1.0, "tau": 1}
    assert calls == [(0.1, None), (0.2, None), (0.3, None)]
    loss_grid = select_on_validation(train, post_hoc, torch.eye(2), torch.tensor([0, 1]), (0.1,), (0.5, 1.5), (1,))
    assert loss_grid["tau"] == 0.5 and loss_grid["epochs"] == 2 and loss_grid["val_macro_top1"] == 0.5
