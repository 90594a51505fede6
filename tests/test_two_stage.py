from __future__ import annotations

import pytest
import torch

from baselines.two_stage import TwoStageConfig, train_two_stage
from fewshot.data.protocols import TransferProtocol
from fewshot.images.augment import AugmentConfig
from fewshot.models.backbones import create_backbone
from fewshot.training.loop import TrainConfig
from fewshot.utils.errors import UserError, run_cli


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


def test_a_resumed_stage_trained_with_other_settings_is_refused_not_reloaded(synthetic_cached, protocol, tmp_path):
    train_two_stage(synthetic_cached.images, protocol, _config(), tmp_path, progress=False)
    longer = _config()
    longer = TwoStageConfig(backbone="conv4", stage1=TrainConfig(**{**longer.stage1.__dict__, "epochs": 5}),
                            stage2=longer.stage2)
    with pytest.raises(UserError, match="stage1|epochs: checkpoint 4, now 5"):
        train_two_stage(synthetic_cached.images, protocol, longer, tmp_path, resume=True, progress=False)


def _cli(*argv: str) -> int:
    from baselines.two_stage import get_args_parser, main

    return run_cli(lambda a: main(get_args_parser().parse_intermixed_args(a)), list(argv), prog="baselines.two_stage")


def test_two_stage_cli_resume_refuses_other_settings_and_other_images(synthetic_root, tmp_path, capsys):
    from fewshot.data.synth import write_synthetic

    data, other = synthetic_root, tmp_path / "other"
    write_synthetic(other, n_classes=12, n_images=480, seed=1, progress=False)
    out = tmp_path / "run"
    fast = ["stage1.epochs=1", "stage2.epochs=1", "stage1.warmup_epochs=0", "stage2.warmup_epochs=0",
            "backbone=conv4", "--size", "32x24", "--device", "cpu", "--n-head", "5"]
    assert _cli("--data", str(data), "--out", str(out), *fast) == 0
    assert _cli("--data", str(data), "--out", str(out), "--resume", *fast, "stage1.epochs=2") == 2
    assert "stage1.epochs: was 1, now 2" in capsys.readouterr().err
    assert _cli("--data", str(other), "--out", str(out), "--resume", *fast) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # above it: the image cache's progress bar
    assert last.startswith("baselines.two_stage: error: the images at") and "not those this run started with" in last
    assert "Traceback" not in err
    assert f"Point --data at the run's dataset ({data})" in last  # the run's folder, not the one just passed
    bigger = [a if a != "32x24" else "40x30" for a in fast]
    assert _cli("--data", str(data), "--out", str(out), "--resume", *bigger) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("the run's images are 32x24 (height x width), these 40x30: a resumed run keeps its image size. Resume at "
            "32x24 (--size 32x24), or start a fresh run.") in last
    assert _cli("--data", str(data), "--out", str(out), "--resume", *fast) == 0  # the same run resumes


def test_two_stage_reads_any_layout_and_reports_what_it_leaves_out_in_a_line(tmp_path, capsys):
    import warnings

    from tests.test_own_data import make_manifest

    manifest = make_manifest(tmp_path / "m", (6, 5, 4), pixels=False)
    (tmp_path / "m" / "broken.png").write_bytes(b"not a png")
    manifest.write_text(manifest.read_text() + "broken.png,Alder,train,Acme Alder,g0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _cli("--data", str(manifest), "--out", str(tmp_path / "run"), "--size", "8x6", "--n-head", "3")
    out, err = capsys.readouterr()
    assert code == 2 and not [w for w in caught if issubclass(w.category, UserWarning)]
    assert "left out: 1 corrupt image (cannot be decoded): broken.png" in out
    assert err.strip().splitlines()[-1] == ("baselines.two_stage: error: no tail classes: every class with train "
                                            "images is among the --n-head 3 head classes; lower --n-head")
