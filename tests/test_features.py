from __future__ import annotations

import numpy as np
import pytest
import torch

import fewshot.images.features as features_mod
from fewshot.images.features import cached_features
from fewshot.images.inference import extract_features
from fewshot.models.backbones import create_backbone
from fewshot.training.checkpoint import save_model


def _checkpoint(path, seed):
    backbone = create_backbone("conv4", seed=seed)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    save_model(path, state, config={}, meta={"backbone": "conv4"}, epoch=1, score=None)
    return backbone


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (12, 32, 24, 3), dtype=np.uint8)


def test_features_equal_a_direct_backbone_pass_and_are_reused(images, tmp_path, monkeypatch):
    backbone = _checkpoint(tmp_path / "a.pt", seed=1)
    idx = np.array([0, 3, 5, 7])
    first = cached_features(tmp_path / "a.pt", "conv4", images, "img-key", idx, cache_root=tmp_path / "f",
                            device="cpu", progress=False)
    backbone = backbone.to(memory_format=torch.channels_last)  # the format the cache computes in
    torch.testing.assert_close(first, extract_features(backbone, images, idx, device="cpu", progress=False))
    monkeypatch.setattr(features_mod, "extract_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = cached_features(tmp_path / "a.pt", "conv4", images, "img-key", idx, cache_root=tmp_path / "f",
                            device="cpu", progress=False)
    assert torch.equal(first, again)


@pytest.mark.parametrize("change", ["checkpoint", "image_key", "indices"])
def test_a_changed_checkpoint_image_cache_or_row_set_is_never_served_stale(images, tmp_path, change):
    _checkpoint(tmp_path / "a.pt", seed=1)
    idx = np.array([0, 1, 2])
    first = cached_features(tmp_path / "a.pt", "conv4", images, "k1", idx, cache_root=tmp_path / "f",
                            device="cpu", progress=False)
    key, rows = "k1", idx
    if change == "checkpoint":
        _checkpoint(tmp_path / "a.pt", seed=2)  # retrained in place: same path, new bytes
    elif change == "image_key":
        key = "k2"
    else:
        rows = np.array([0, 1, 3])
    second = cached_features(tmp_path / "a.pt", "conv4", images, key, rows, cache_root=tmp_path / "f",
                             device="cpu", progress=False)
    assert len(list((tmp_path / "f").glob("*.npy"))) == 2
    if change != "image_key":
        assert not torch.equal(first, second)


def test_a_damaged_cache_file_is_rebuilt(images, tmp_path):
    _checkpoint(tmp_path / "a.pt", seed=1)
    args = ("conv4", images, "k", np.arange(4))
    first = cached_features(tmp_path / "a.pt", *args, cache_root=tmp_path / "f", device="cpu", progress=False)
    (npy,) = (tmp_path / "f").glob("*.npy")
    npy.write_bytes(b"garbage")
    again = cached_features(tmp_path / "a.pt", *args, cache_root=tmp_path / "f", device="cpu", progress=False)
    assert torch.equal(first, again)
