from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fewshot.methods as methods
from fewshot.data.split import stratified_split
from fewshot.methods import CRT, METHODS, LogitAdjust, TauNorm, create_method
from fewshot.methods.linear_training import train_linear
from fewshot.methods.longtail_functional import tau_normalize

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Small and fast: a few optimiser steps per training, every choice still made on validation.
FAST = dict(epochs=4, lr=0.05, batch_size=8, min_steps=0)
KINDS = {"crt": CRT, "tau_norm": TauNorm, "logit_adjust": LogitAdjust,
         "logit_adjust_loss": lambda **kw: LogitAdjust(variant="loss", **kw)}


def _make(kind: str, **kw):
    if kind == "crt":
        kw.pop("taus", None)
    return KINDS[kind](**kw)


def _clusters(counts, d, sep, seed, dtype=torch.float64):
    """Gaussian classes: mean ~ N(0, sep^2 I) per class, unit noise; ``counts[c]`` items of class c."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(len(counts), d, generator=g, dtype=dtype) * sep
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return means[y] + torch.randn(len(y), d, generator=g, dtype=dtype), y, means


def _reference(kind, x, y, query, *, weight_decays, taus, val_fraction, seed, epochs, lr, batch_size):
    """The method written out: standardise with the support's statistics; on the stratified split, one
    training per (weight decay, loss tau, number of epochs) and every post-hoc tau; first best macro
    top-1; retrain on the whole support; tau-normalise with ``tau_normalize``. Returns (scores, chosen)."""
    n_classes = int(y.max()) + 1
    mean, std = x.mean(0), x.std(0, unbiased=False)
    xs, qs = (x - mean) / std, (query - mean) / std
    train, val = (torch.from_numpy(a) for a in stratified_split(y.numpy(), val_fraction, seed))

    def prior_of(labels):
        return torch.log(torch.bincount(labels, minlength=n_classes).double() / len(labels))

    def fit(xt, yt, wd, k, loss_tau):
        return train_linear(xt, yt, n_classes, epochs=k, lr=lr, batch_size=batch_size, weight_decay=wd,
                            balanced=kind == "crt", loss_log_prior=prior_of(yt) if loss_tau is not None else None,
                            loss_tau=loss_tau or 0.0, generator=torch.Generator().manual_seed(seed))

    def score(feats, w, b, prior, tau):
        if kind == "tau_norm":
            return feats @ tau_normalize(w, tau).T
        if kind == "logit_adjust":
            return feats @ w.T + b - tau * prior
        return feats @ w.T + b

    def macro(scores, labels):
        pred = scores.argmax(1)
        return np.mean([(pred[labels == c] == c).double().mean().item() for c in labels.unique()])

    loss_taus = taus if kind == "logit_adjust_loss" else [None]
    post_taus = taus if kind in ("tau_norm", "logit_adjust") else [None]
    best = None
    for wd in weight_decays:
        for loss_tau in loss_taus:
            for k in range(1, epochs + 1):
                w, b = fit(xs[train], y[train], wd, k, loss_tau)
                for tau in post_taus:
                    acc = macro(score(xs[val], w, b, prior_of(y[train]), tau), y[val])
                    if best is None or acc > best["val_macro_top1"]:
                        best = {"weight_decay": wd, "epochs": k, "val_macro_top1": acc,
                                "tau": tau if loss_tau is None else loss_tau}
    w, b = fit(xs, y, best["weight_decay"], best["epochs"], best["tau"] if kind == "logit_adjust_loss" else None)
    if kind == "crt":
        del best["tau"]
    grids = {"weight_decay": tuple(weight_decays), "tau": tuple(taus) if "tau" in best else (),
             "epochs": tuple(range(1, epochs + 1))}
    best["at_grid_edge"] = [k for k, g in grids.items() if len(g) > 1 and best[k] in (min(g), max(g))]
    return score(qs, w, b, prior_of(y), best.get("tau")), best


# ---- each method against its reference ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("seed", [0, 1])
def test_each_method_equals_its_written_out_reference(kind, seed):
    x, y, means = _clusters([30, 14, 7, 4], 5, 0.8, seed)
    query = means[torch.arange(4).repeat(5)] + torch.randn(20, 5, generator=torch.Generator().manual_seed(9),
                                                            dtype=torch.float64)
    settings = dict(weight_decays=(0.0, 0.1), taus=(0.0, 0.5, 1.5), val_fraction=0.3, seed=seed)
    model = _make(kind, **FAST, **settings).fit(x, y)
    want, chosen = _reference(kind, x, y, query, **settings, epochs=FAST["epochs"], lr=FAST["lr"],
                              batch_size=FAST["batch_size"])
    assert model.chosen.keys() == chosen.keys()
    assert model.chosen.pop("at_grid_edge") == chosen.pop("at_grid_edge")
    assert model.chosen == pytest.approx(chosen, rel=1e-12)
    torch.testing.assert_close(model.scores(query), want, rtol=1e-9, atol=1e-9)


def test_tau_zero_gives_the_plain_classifier_without_its_bias_or_with_it():
    """TauNorm(taus=(0,)) scores x @ W.T (the instance-balanced classifier, trained with a bias that scoring
    drops); LogitAdjust(taus=(0,)) scores x @ W.T + b: the plain classifier."""
    x, y, _ = _clusters([25, 9, 4], 6, 0.7, 3)
    query = torch.randn(11, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tn = TauNorm(**FAST, taus=(0.0,), val_fraction=0.0).fit(x, y)
    la = LogitAdjust(**FAST, taus=(0.0,), val_fraction=0.0).fit(x, y)
    assert tn.chosen == la.chosen == {"weight_decay": 1e-4, "epochs": 4, "val_macro_top1": None, "tau": 0.0}
    xs, qs = ((t - x.mean(0)) / x.std(0, unbiased=False) for t in (x, query))
    w, b = train_linear(xs, y, 3, epochs=4, lr=0.05, batch_size=8, weight_decay=1e-4,
                        generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(tn.scores(query), qs @ w.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(la.scores(query), qs @ w.T + b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["post_hoc", "loss"])
def test_logit_adjustment_with_a_uniform_prior_changes_nothing(variant):
    x, y, _ = _clusters([12, 12, 12, 12], 6, 0.6, 4)
    query = torch.randn(30, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plain = LogitAdjust(**FAST, taus=(0.0,)).fit(x, y)
    adjusted = LogitAdjust(**FAST, taus=(1.0, 2.0), variant=variant).fit(x, y)
    # the same choice but tau (a one-value grid has no edge; (1.0, 2.0) has two)
    assert {k: v for k, v in adjusted.chosen.items() if k not in ("tau", "at_grid_edge")} == \
        {k: v for k, v in plain.chosen.items() if k not in ("tau", "at_grid_edge")}
    assert [k for k in adjusted.chosen["at_grid_edge"] if k != "tau"] == plain.chosen["at_grid_edge"]
    shift = adjusted.scores(query) - plain.scores(query)
    torch.testing.assert_close(shift, torch.full_like(shift, shift[0, 0].item()), rtol=0, atol=1e-9)
    assert torch.equal(adjusted.scores(query).argmax(1), plain.scores(query).argmax(1))


# ---- long-tailed data --------------------------------------------------------------------------------------

LONG_TAIL = [round(200 * (3 / 200) ** (i / 9)) for i in range(10)]  # 200, 125, 79, ..., 5, 3


def _macro(scores, labels):
    pred = scores.argmax(1)
    return float(np.mean([(pred[labels == c] == c).double().mean().item() for c in range(10)]))


@pytest.fixture(scope="module")
def long_tailed():
    """A long-tailed support (counts 200 .. 3, 10 Gaussian classes in 64 dims), a balanced test set, and
    the plain instance-balanced linear classifier's test macro top-1 (same defaults and choices)."""
    x, y, means = _clusters(LONG_TAIL, 64, 0.5, 0, torch.float32)
    y_test = torch.arange(10).repeat_interleave(100)
    x_test = means[y_test] + torch.randn(1000, 64, generator=torch.Generator().manual_seed(1))
    plain = _macro(LogitAdjust(taus=(0.0,)).fit(x, y).scores(x_test), y_test)
    return x, y, x_test, y_test, plain


@pytest.mark.parametrize("name", ["crt", "tau_norm", "logit_adjust"])
def test_long_tail_methods_beat_the_plain_classifier_on_balanced_test_data(long_tailed, name):
    # measured with the defaults: plain 0.742; cRT 0.922, tau-norm 0.906, logit adjustment 0.879 (data
    # seeds 1-3: plain 0.63-0.66, every method at least 0.14 above it)
    x, y, x_test, y_test, plain = long_tailed
    macro = _macro(create_method(name).fit(x, y).scores(x_test), y_test)
    assert plain < 0.8 and macro > plain + 0.1


# ---- determinism, isolation, fallbacks -------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_fitting_twice_gives_identical_state_and_scores(kind):
    x, y, _ = _clusters([20, 8, 5], 4, 1.0, 5)
    q = torch.randn(9, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model = _make(kind, **FAST, taus=(0.0, 1.0))
    first = {k: v.clone() for k, v in model.fit(x, y).state_dict().items()}
    chosen, scores = dict(model.chosen), model.scores(q)
    torch.manual_seed(123)  # the global RNG must not matter
    again = _make(kind, **FAST, taus=(0.0, 1.0)).fit(x, y)
    assert model.fit(x, y).chosen == chosen == again.chosen
    for m in (model, again):
        assert all(torch.equal(first[k], v) for k, v in m.state_dict().items())
        assert torch.equal(m.scores(q), scores)


@pytest.mark.parametrize("kind", list(KINDS))
def test_choices_and_transform_come_from_the_support_alone(kind):
    """Each query's scores are the same alone or in any batch: no query statistic enters."""
    x, y, _ = _clusters([20, 8, 5], 4, 1.0, 6)
    q = torch.randn(12, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 5 + 3
    model = _make(kind, **FAST, taus=(0.0, 0.5, 1.0)).fit(x, y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    together = model.scores(q)
    torch.testing.assert_close(torch.cat([model.scores(q[i:i + 1]) for i in range(12)]), together,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.scores(torch.cat([q[:3], -q]))[:3], together[:3], rtol=1e-12, atol=1e-12)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("kind", "tau"), [("crt", None), ("tau_norm", 1.0), ("logit_adjust", 1.0),
                                           ("logit_adjust_loss", 1.0)])
@pytest.mark.parametrize("val_fraction", [0.2, 0.0])
def test_without_validation_items_the_documented_fallback_is_used(kind, tau, val_fraction):
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(5))
    y = torch.arange(5) if val_fraction else torch.tensor([0, 0, 1, 1, 2])  # one per class: no split
    model = _make(kind, weight_decays=(0.3, 0.01), val_fraction=val_fraction).fit(x, y)
    want = {"weight_decay": 0.3, "epochs": 300, "val_macro_top1": None}  # 1 step an epoch, min_steps=300
    assert model.chosen == (want if tau is None else {**want, "tau": tau})
    assert torch.isfinite(model.scores(x)).all()
    grid = _make(kind, taus=(0.0, 0.75, 2.0), min_steps=0, val_fraction=val_fraction).fit(x, y)
    assert grid.chosen.get("tau") == (None if tau is None else 0.75)  # the grid's value nearest 1
    assert grid.chosen["epochs"] == 10


@pytest.mark.parametrize("kind", list(KINDS))
def test_with_groups_whole_groups_are_held_out_and_a_single_group_class_gives_no_validation(kind, monkeypatch):
    x, y, _ = _clusters([20, 12, 8], 4, 1.0, 7)
    blocks = np.arange(len(y)) // 4  # four consecutive items (of one class) share a group
    seen = []
    real = methods.linear_head.validation_split

    def spy(labels, fraction, seed, *, groups=None, min_per_class=1):
        seen.append(real(labels, fraction, seed, groups=groups, min_per_class=min_per_class))
        return seen[-1]

    monkeypatch.setattr(methods.linear_head, "validation_split", spy)
    model = _make(kind, **FAST).fit(x, y, groups=blocks)
    train, val = seen[-1]
    assert len(val) and not set(blocks[train]) & set(blocks[val]) and model.chosen["val_macro_top1"] is not None
    one_group = _make(kind, **FAST).fit(x, y, groups=y.numpy())  # each class one group: nothing to hold out
    assert one_group.chosen["val_macro_top1"] is None


def test_buffers_follow_the_module_and_fitting_runs_under_inference_mode():
    x, y, _ = _clusters([15, 6, 3], 4, 1.0, 7, torch.float32)
    model = TauNorm(**FAST)
    with torch.inference_mode():
        model.fit(x, y)
    assert set(dict(model.named_buffers())) == {"feature_mean", "feature_std", "weight", "bias", "log_prior"}
    plain = TauNorm(**FAST).fit(x, y)
    assert torch.equal(plain.scores(x), model.scores(x))
    model.double()
    assert model.weight.dtype == torch.float64 and model.scores(x.double()).dtype == torch.float64


def test_the_three_are_registered():
    assert {METHODS["crt"], METHODS["tau_norm"], METHODS["logit_adjust"]} == {CRT, TauNorm, LogitAdjust}
    assert {"CRT", "TauNorm", "LogitAdjust"} <= set(methods.__all__)
    assert isinstance(create_method("logit_adjust", variant="loss", taus=(1.0,)), LogitAdjust)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: CRT().scores(torch.zeros(2, 3)), "call fit"),
        (lambda: TauNorm(taus=()), "taus must be a non-empty grid"),
        (lambda: LogitAdjust(taus=(1.0, -0.5)), "taus must be a non-empty grid of values >= 0"),
        (lambda: CRT(weight_decays=()), "weight_decays must be a non-empty grid"),
        (lambda: CRT(weight_decays=(-1e-4,)), "weight_decays must be"),
        (lambda: CRT(val_fraction=1.0), r"val_fraction=1.0 must lie in \[0, 1\)"),
        (lambda: TauNorm(val_fraction=-0.1), "val_fraction"),
        (lambda: CRT(epochs=0), "epochs=0"),
        (lambda: CRT(lr=0.0), "lr=0.0 must be > 0"),
        (lambda: LogitAdjust(variant="both"), "unknown variant 'both'; known: post_hoc, loss"),
        (lambda: CRT().fit(torch.zeros(4, 3), torch.tensor([0, 1, 1])), "matching support"),
        (lambda: CRT().fit(torch.zeros(3, 3), torch.tensor([0.0, 1.0, 1.0])), "integers"),
        (lambda: CRT().fit(torch.zeros(3, 3), torch.tensor([0, 2, 2])), r"classes \[1\] have no support item"),
        (lambda: CRT(**FAST).fit(torch.randn(4, 3), torch.tensor([0, 1, 0, 1])).scores(torch.zeros(2, 5)),
         "query features have d=5, the support had d=3"),
    ],
)
def test_bad_inputs_raise_one_clear_error(call, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        call()


def test_the_loss_variant_trains_once_per_tau_and_post_hoc_once(monkeypatch):
    import fewshot.methods.linear_head as linear_head

    calls = []
    real = linear_head.train_linear

    def counting(*args, **kw):
        calls.append(kw["loss_log_prior"] is not None)
        return real(*args, **kw)

    monkeypatch.setattr(linear_head, "train_linear", counting)
    x, y, _ = _clusters([12, 6, 4], 3, 1.0, 8)
    for variant, expected in (("post_hoc", [False] * 3), ("loss", [True] * 7)):
        calls.clear()
        LogitAdjust(**FAST, taus=(0.0, 1.0, 2.0), weight_decays=(0.0, 0.1), variant=variant).fit(x, y)
        assert calls == expected  # (2 weight decays [x 3 taus]) + the refit
    assert math.isfinite(LogitAdjust(**FAST).fit(x, y).chosen["val_macro_top1"])
