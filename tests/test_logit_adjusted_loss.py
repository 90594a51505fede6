"""TrainConfig(loss="logit_adjusted"): the supervised objective's logit-adjusted loss (Menon et al. 2021)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot.config import load_config
from fewshot.images.augment import AugmentConfig
from fewshot.models.backbones import Conv4
from fewshot.models.classifier import Classifier
from fewshot.training.loop import TrainConfig, fit
from fewshot.training.supervised import SupervisedObjective

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = TrainConfig(epochs=2, batch_size=16, lr=0.05, warmup_epochs=0.5, val_fraction=0.0, device="cpu",
                   eval_batch_size=32, augment=AugmentConfig(enabled=False))


def _images(labels: np.ndarray, size: int = 16, seed: int = 0) -> np.ndarray:
    """Random images whose class shows as a colour cast: class c brightens channel c % 3."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (len(labels), size, size, 3))
    images[np.arange(len(labels)), :, :, labels % 3] += 120
    return images.astype(np.uint8)


def _model(n_classes: int, seed: int = 0) -> Classifier:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = Conv4(width=8)
    return Classifier(backbone, n_classes, seed=seed)


def _objective(labels: np.ndarray, config: TrainConfig, **kwargs) -> SupervisedObjective:
    obj = SupervisedObjective(_images(labels), labels, np.arange(len(labels)), config, **kwargs)
    obj.setup(torch.device("cpu"), torch.contiguous_format)
    return obj


def _train(labels: np.ndarray, config: TrainConfig) -> dict[str, torch.Tensor]:
    model = _model(int(labels.max()) + 1)
    fit(model, SupervisedObjective(_images(labels), labels, np.arange(len(labels)), config), config, progress=False)
    return model.state_dict()


def test_on_uniform_labels_the_logit_adjusted_loss_trains_the_same_weights_as_cross_entropy():
    """A uniform prior shifts every logit by one constant, which the softmax ignores."""
    labels = np.random.default_rng(0).permutation(np.arange(48) % 3)
    ce = _train(labels, TINY)
    adjusted = _train(labels, dataclasses.replace(TINY, loss="logit_adjusted", loss_tau=1.0))
    assert ce.keys() == adjusted.keys()
    for key in ce:
        torch.testing.assert_close(adjusted[key], ce[key], rtol=1e-4, atol=1e-5)
    moved = _model(3).state_dict()
    assert any(not torch.allclose(ce[k].float(), moved[k].float()) for k in ce)  # training did something


@pytest.mark.parametrize("class_weights", ["none", "inverse"])
@pytest.mark.parametrize(("tau", "smoothing"), [(1.0, 0.0), (0.5, 0.1)])
def test_the_loss_is_cross_entropy_of_logits_plus_tau_log_prior_with_the_class_weights(class_weights, tau, smoothing):
    labels = np.repeat([0, 1, 2], [40, 10, 2])
    cfg = dataclasses.replace(TINY, loss="logit_adjusted", loss_tau=tau, class_weights=class_weights,
                              label_smoothing=smoothing)
    obj = _objective(labels, cfg)
    x, y = next(iter(obj.train_batches(0, torch.Generator().manual_seed(0))))
    model = _model(3)
    loss, correct, n = obj.loss(model, (x, y))
    logits = model(x)
    prior = torch.tensor([math.log(40 / 52), math.log(10 / 52), math.log(2 / 52)])
    weight = None if class_weights == "none" else torch.tensor([1.0, 4.0, 20.0])
    torch.testing.assert_close(loss, F.cross_entropy(logits + tau * prior, y, weight=weight, label_smoothing=smoothing))
    assert n == len(y) and int(correct) == int((logits.argmax(1) == y).sum())  # accuracy on the plain logits


def test_the_default_loss_is_plain_cross_entropy_bit_for_bit():
    labels = np.repeat([0, 1, 2], [30, 10, 4])
    obj = _objective(labels, dataclasses.replace(TINY, class_weights="inverse", label_smoothing=0.1))
    assert TrainConfig().loss == "ce" and obj.log_prior is None
    x, y = next(iter(obj.train_batches(0, torch.Generator().manual_seed(0))))
    model = _model(3)
    loss, _, _ = obj.loss(model, (x, y))
    assert torch.equal(loss, F.cross_entropy(model(x).float(), y, weight=obj.class_weight, label_smoothing=0.1))


def test_validation_scores_the_plain_logits_whatever_the_loss():
    labels = np.repeat([0, 1, 2], [30, 10, 4])
    val = np.array([0, 1, 30, 31, 40, 41])
    train = np.setdiff1d(np.arange(len(labels)), val)
    images, model = _images(labels), _model(3).eval()
    scores = []
    for loss in ("ce", "logit_adjusted"):
        obj = SupervisedObjective(images, labels, train, dataclasses.replace(TINY, loss=loss), val_indices=val)
        obj.setup(torch.device("cpu"), torch.contiguous_format)
        with torch.no_grad():
            scores.append(obj.validate(model))
    assert scores[0] == scores[1]


def test_an_empty_training_class_gets_a_finite_prior():
    labels = np.repeat([0, 2], [20, 6])  # class 1 absent from training
    obj = _objective(labels, dataclasses.replace(TINY, loss="logit_adjusted"), n_classes=3)
    assert torch.isfinite(obj.log_prior).all()
    x, y = next(iter(obj.train_batches(0, torch.Generator().manual_seed(0))))
    assert torch.isfinite(obj.loss(_model(3), (x, y))[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"loss": "focal"}, "unknown train.loss 'focal'; known: ce, logit_adjusted"),
     ({"loss": "logit_adjusted", "loss_tau": -0.5}, "loss_tau=-0.5 must be >= 0")],
)
def test_bad_loss_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_the_loss_is_a_config_key():
    cfg = load_config(TrainConfig, None, ["loss=logit_adjusted", "loss_tau=0.5"])
    assert (cfg.loss, cfg.loss_tau) == ("logit_adjusted", 0.5)
    with pytest.raises(ValueError, match="logit_adjusted"):
        load_config(TrainConfig, None, ["loss=focal"])
