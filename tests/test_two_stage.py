from __future__ import annotations

import pytest
import torch

from baselines.two_stage import TwoStageConfig, train_two_stage
from fewshot.data.protocols import TransferProtocol
from fewshot.images.augment import AugmentConfig
from fewshot.models.backbones import create_backbone
from fewshot.training.loop import TrainConfig


def _config(**kw) -> TwoStageConfig:
    fast = dict(epochs=4, batch_size=32, lr=0.05, warmup_epochs=0.0, device="cpu",
                augment=AugmentConfig(enabled=False), eval_batch_size=128)
    return TwoStageConfig(backbone="conv4", stage1=TrainConfig(**fast),
                          stage2=TrainConfig(**{**fast, "class_weights": "inverse"}), **kw)


@pytest.fixture(scope="module")
def protocol(synthetic_cached):
    return TransferProtocol.from_styles(synthetic_cached.styles, n_head=5)


def test_two_stage_scores_head_and_tail_test_images(synthetic_cached, protocol, tmp_path):
    s1, s2 = train_two_stage(synthetic_cached.images, protocol, _config(), tmp_path, progress=False)
    assert s1.scores.shape == (len(protocol.head_test), 5)
    assert s2.scores.shape == (len(protocol.tail_test), len(protocol.tail))
    assert torch.equal(s2.targets, torch.from_numpy(protocol.targets(protocol.tail_test, "tail")))
    assert s1.classes == protocol.head and s2.classes == protocol.tail
    assert (tmp_path / "stage1" / "best.pt").exists() and (tmp_path / "stage2" / "best.pt").exists()
    head_acc = (s1.scores.argmax(1) == s1.targets).float().mean()
    assert head_acc > 1.5 / 5  # learns something in a few epochs on the synthetic head


def test_stage_two_starts_from_stage_one_weights_not_from_scratch(synthetic_cached, protocol, tmp_path, monkeypatch):
    import baselines.two_stage as module

    seen = {}
    real_fit = module.fit

    def spy(model, objective, config, out_dir, **kw):
        if out_dir.name == "stage2":
            seen["start"] = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        return real_fit(model, objective, config, out_dir, **kw)

    monkeypatch.setattr(module, "fit", spy)
    train_two_stage(synthetic_cached.images, protocol, _config(), tmp_path, progress=False)
    best1 = torch.load(tmp_path / "stage1" / "best.pt", weights_only=True)["backbone"]
    assert seen["start"].keys() == best1.keys()
    assert all(torch.equal(seen["start"][k], best1[k]) for k in best1)
    scratch = create_backbone("conv4", seed=0).state_dict()
    assert any(not torch.equal(scratch[k], best1[k]) for k in best1)  # stage 1 did move the weights


def test_frozen_backbone_only_trains_the_head(synthetic_cached, protocol, tmp_path):
    train_two_stage(synthetic_cached.images, protocol, _config(freeze_backbone=True), tmp_path, progress=False)
    b1 = torch.load(tmp_path / "stage1" / "best.pt", weights_only=True)["backbone"]
    b2 = torch.load(tmp_path / "stage2" / "best.pt", weights_only=True)["backbone"]
    assert all(torch.equal(b1[k], b2[k]) for k in b1)  # BatchNorm running stats included
    head2 = torch.load(tmp_path / "stage2" / "best.pt", weights_only=True)["model"]["head.weight"]
    assert head2.shape[0] == len(protocol.tail)


def test_resumed_two_stage_reuses_finished_stages(synthetic_cached, protocol, tmp_path, monkeypatch):
    first = train_two_stage(synthetic_cached.images, protocol, _config(), tmp_path, progress=False)
    import baselines.two_stage as module
    monkeypatch.setattr(module, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again = train_two_stage(synthetic_cached.images, protocol, _config(), tmp_path, resume=True, progress=False)
    assert torch.equal(first[1].scores, again[1].scores) and torch.equal(first[0].scores, again[0].scores)
