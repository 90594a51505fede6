from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.evaluation import episodic_eval
from fewshot.images.augment import AugmentConfig
from fewshot.images.inference import extract_features
from fewshot.methods import ProtoNet
from fewshot.models.backbones import create_backbone
from fewshot.sampling import EpisodeSampler
from fewshot.training.episodic import EpisodeConfig, EpisodicObjective
from fewshot.training.loop import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _split(ds):
    """Base classes (train + validation images) and novel classes, each with >= 20 images."""
    counts = np.bincount(ds.labels)
    big = np.flatnonzero(counts >= 20)
    base, novel = big[: len(big) // 2 + 1], big[len(big) // 2 + 1:]
    rng = np.random.default_rng(0)
    base_idx = np.flatnonzero(np.isin(ds.labels, base))
    val = np.sort(np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), 20, replace=False) for c in base[:3]]))
    train = np.setdiff1d(base_idx, val)
    return train, val, np.flatnonzero(np.isin(ds.labels, novel))


def _train_config(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=0.002, optimizer="adamw", warmup_epochs=0.0, weight_decay=0.0,
                       device="cpu", augment=AugmentConfig(enabled=False), seed=0)


EPISODES = EpisodeConfig(n_way=3, n_shot=5, n_query=5, episodes_per_epoch=20, val_way=3, val_shot=5,
                         val_query=5, val_episodes=30)


def _novel_accuracy(model, ds, novel) -> float:
    feats = extract_features(model.backbone, ds.images, novel, progress=False)
    sampler = EpisodeSampler(ds.labels[novel], 3, 5, 10, 200, seed=1)
    return episodic_eval(feats, ds.labels[novel], sampler, device="cpu", progress=False).mean


def test_protonet_beats_chance_by_a_wide_margin_on_novel_synthetic_classes(synthetic_cached, tmp_path):
    ds = synthetic_cached
    train, val, novel = _split(ds)
    model = ProtoNet(create_backbone("conv4", seed=0))
    untrained = _novel_accuracy(model, ds, novel)
    objective = EpisodicObjective(ds.images, ds.labels, train, val, EPISODES, _train_config(4))
    result = fit(model, objective, _train_config(4), tmp_path, progress=False)
    accuracy = _novel_accuracy(model, ds, novel)
    # 3-way: chance is 1/3; a random conv4 already clusters the synthetic shapes somewhat (measured 0.74),
    # episodic training must add a clear margin on classes it never saw (measured 0.94).
    assert accuracy > 0.85 and accuracy > untrained + 0.1, (untrained, accuracy)
    assert result.best_score is not None and 0 < result.best_score <= 1
    assert len(result.history) == 4


def test_episodic_training_resumes_to_the_same_weights(synthetic_cached, tmp_path):
    ds = synthetic_cached
    train, val, _ = _split(ds)

    def run(out, epochs, resume=False):
        model = ProtoNet(create_backbone("conv4", seed=0))
        objective = EpisodicObjective(ds.images, ds.labels, train, val, EPISODES, _train_config(2))
        fit(model, objective, _train_config(2), out, resume=resume, progress=False, restore_best=False)
        return model

    straight = run(tmp_path / "a", 2)
    # Simulate a crash after epoch 1: train 1 epoch by cutting the objective's epochs short.
    import fewshot.training.loop as train_module

    calls = {"n": 0}
    real = train_module._train_epoch

    def die_after_first(*args, **kwargs):
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    train_module._train_epoch = die_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "b", 2)
    finally:
        train_module._train_epoch = real
    resumed = run(tmp_path / "b", 2, resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_episodic_objective_leaves_out_classes_too_small_for_an_episode(synthetic_cached):
    ds = synthetic_cached
    counts = np.bincount(ds.labels)
    episodes = EpisodeConfig(n_way=3, n_shot=5, n_query=15)  # needs 20 images per class
    objective = EpisodicObjective(ds.images, ds.labels, np.arange(len(ds.labels)), np.array([], dtype=np.int64),
                                  episodes, _train_config(1))
    assert objective.excluded == {c: int(n) for c, n in enumerate(counts) if n < 20}
    assert objective.excluded  # the synthetic long tail has such classes
    assert objective.validate(ProtoNet(create_backbone("conv4"))) is None
