from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

import fewshot.models.backbones as backbones_mod
from fewshot.models.backbones import Conv4, ResNet12, available_backbones, create_backbone, register_backbone
from fewshot.models.classifier import Classifier
from fewshot.models.normalization import IMAGENET_MEAN, IMAGENET_STD, InputNormalization, input_stats

OUT_DIMS = {"conv4": 960, "resnet12": 640, "resnet18": 512, "resnet34": 512, "resnet50": 2048}
# Registered always; built by timm, the optional 'pretrained' extra (tested in test_efficientnet_lite.py).
LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
KNOWN = "conv4, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, resnet12, resnet18, resnet34, resnet50"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty TORCH_HOME in which any download attempt fails like a machine without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called torch.hub.set_dir
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints", calls


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish with it: the registry is a copy for its duration."""
    monkeypatch.setattr(backbones_mod, "_FACTORIES", dict(backbones_mod._FACTORIES))
    monkeypatch.setattr(backbones_mod, "_IMAGENET", dict(backbones_mod._IMAGENET))


class TinyBackbone(torch.nn.Module):
    """Global average pool + a seeded linear map: images [B, 3, H, W] -> [B, 5]."""

    out_dim = 5

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


def test_registry_knows_the_eight_backbones():
    assert available_backbones() == tuple(sorted([*OUT_DIMS, *LITE]))


def test_registered_backbone_is_built_seeded_and_listed(scratch_registry):
    register_backbone("tiny", TinyBackbone)
    a, b, c = create_backbone("tiny", seed=1), create_backbone("tiny", seed=1), create_backbone("tiny", seed=2)
    assert isinstance(a, TinyBackbone) and "tiny" in available_backbones()
    assert torch.equal(a.proj.weight, b.proj.weight) and not torch.equal(a.proj.weight, c.proj.weight)
    with torch.no_grad():
        assert a(torch.zeros(2, 3, 8, 6)).shape == (2, 5)


def test_unknown_backbone_error_lists_registered_ones_too(scratch_registry):
    register_backbone("tiny", TinyBackbone)
    with pytest.raises(ValueError, match=f"known: {KNOWN}, tiny"):
        create_backbone("resnet9")


def test_registering_a_taken_name_needs_overwrite(scratch_registry):
    with pytest.raises(ValueError, match="'conv4' is already registered; pass overwrite=True"):
        register_backbone("conv4", TinyBackbone)
    assert isinstance(create_backbone("conv4"), Conv4)
    register_backbone("conv4", TinyBackbone, overwrite=True)
    assert isinstance(create_backbone("conv4"), TinyBackbone)


def test_factory_without_out_dim_is_refused_when_built(scratch_registry):
    register_backbone("no-dim", lambda: torch.nn.Identity())
    with pytest.raises(TypeError, match="'no-dim'.*without an int out_dim"):
        create_backbone("no-dim")


@pytest.mark.parametrize("name", sorted(OUT_DIMS))
def test_backbone_maps_80x60_images_to_out_dim_features(name):
    model = create_backbone(name).eval()
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 80, 60, generator=torch.Generator().manual_seed(0)))
    assert model.out_dim == OUT_DIMS[name]
    assert feats.shape == (2, OUT_DIMS[name]) and torch.isfinite(feats).all()


@pytest.mark.parametrize("size", [(32, 32), (84, 84), (80, 60), (120, 90)])
@pytest.mark.parametrize("make,dim", [(Conv4, 960), (lambda: ResNet12(widths=(8, 16, 32, 40)), 40)])
def test_few_shot_backbones_keep_out_dim_whatever_the_input_size(make, dim, size):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = make().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, dim)


def test_conv4_at_80x60_is_the_plain_flatten_of_its_last_map():
    model = create_backbone("conv4").eval()
    x = torch.randn(3, 3, 80, 60, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        last = model.features(x)
        assert last.shape == (3, 64, 5, 3)
        assert torch.equal(model(x), last.flatten(1))


def test_resnet12_has_the_standard_widths_and_three_convs_per_block():
    model = create_backbone("resnet12")
    convs = [[m for m in block.convs if isinstance(m, torch.nn.Conv2d)] for block in model.layers]
    assert [len(c) for c in convs] == [3, 3, 3, 3]
    assert [c[-1].out_channels for c in convs] == [64, 160, 320, 640]


def test_unknown_backbone_lists_the_known_names():
    with pytest.raises(ValueError, match=f"unknown backbone 'resnet9'; known: {KNOWN}"):
        create_backbone("resnet9")


@pytest.mark.parametrize("name", sorted(OUT_DIMS))
def test_imagenet_statistics_backbones_get_their_input_untouched(name):
    """Nothing is put in front of them: their input, and so every result, is what it was."""
    model = create_backbone(name)
    assert input_stats(model) == (IMAGENET_MEAN, IMAGENET_STD)
    assert not any(isinstance(m, InputNormalization) for m in model.modules())


def test_a_backbone_declaring_other_statistics_without_converting_is_refused(scratch_registry):
    class Declares(TinyBackbone):
        input_mean = input_std = (0.5, 0.5, 0.5)

    class Converts(Declares):
        def __init__(self) -> None:
            super().__init__()
            self.normalize = InputNormalization(self.input_mean, self.input_std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(self.normalize(x))

    register_backbone("declares", Declares)
    register_backbone("converts", Converts)
    with pytest.raises(TypeError, match=r"'declares' declares input_mean=\(0.5, 0.5, 0.5\).*no InputNormalization"):
        create_backbone("declares")
    assert create_backbone("converts").out_dim == 5


def test_input_normalization_maps_imagenet_normalised_input_to_its_statistics():
    pixels = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    layer = InputNormalization((0.5, 0.4, 0.3), (0.5, 0.25, 0.2))
    want = (pixels - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 0.2]).view(1, 3, 1, 1)
    torch.testing.assert_close(layer((pixels - mean) / std), want, rtol=1e-6, atol=1e-6)
    assert dict(layer.state_dict()) == {}


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def cuda_seeding_calls(monkeypatch):
    """Every call that would reseed a CUDA generator, recorded instead of made."""
    calls = []
    for fn in ("manual_seed", "manual_seed_all", "seed", "seed_all"):
        monkeypatch.setattr(torch.cuda, fn, lambda *a, _fn=fn, **k: calls.append((_fn, a)))
    return calls


@pytest.mark.parametrize("name", ["conv4", "resnet12", "resnet18"])
def test_initialisation_is_seeded_and_leaves_the_global_rng_alone(name):
    before = torch.get_rng_state()
    a, b, c = create_backbone(name, seed=3), create_backbone(name, seed=3), create_backbone(name, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert _same_state(a, b)
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("name", ["conv4", "resnet12", "resnet18"])
def test_initial_weights_equal_the_torch_manual_seed_recipe(name):
    """The weights of a seed are those of the earlier ``fork_rng`` + ``torch.manual_seed`` recipe, so
    runs (and the smoke benchmark's numbers) made before the fix are reproduced exactly."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        reference = backbones_mod._FACTORIES[name]()
    model = Classifier(create_backbone(name, seed=5), 7, seed=5)
    assert _same_state(model.backbone, reference)
    # The head of the old recipe drew from a fresh seed too, not from where the backbone left off.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        head = torch.nn.Linear(reference.out_dim, 7)
    assert _same_state(model.head, head)


def test_backbone_and_classifier_never_reseed_a_cuda_generator(cuda_seeding_calls):
    model = Classifier(create_backbone("conv4", seed=1), 3, seed=2)
    assert cuda_seeding_calls == [] and model.head.out_features == 3


def test_classifier_head_is_seeded_and_leaves_the_global_rng_alone():
    backbone = create_backbone("conv4", seed=0)
    before = torch.get_rng_state()
    a, b, c = (Classifier(backbone, 4, seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize("name", ["resnet18"])
def test_imagenet_weights_load_offline_from_the_torch_hub_cache(offline_hub, name):
    folder, calls = offline_hub
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    with torch.random.fork_rng():
        torch.manual_seed(123)
        saved = getattr(torchvision.models, name)(weights=None).state_dict()  # includes fc.*, like the real file
    folder.mkdir(parents=True)
    torch.save(saved, folder / os.path.basename(url))
    model = create_backbone(name, "imagenet")
    assert calls == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_imagenet_cache_file_is_named_like_torchvision_names_it(offline_hub):
    folder, _ = offline_hub
    with pytest.raises(RuntimeError, match="resnet18-f37072fd.pth"):
        create_backbone("resnet18", "imagenet")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_weights_offline_without_cache_say_both_ways_out(offline_hub, name):
    folder, calls = offline_hub
    with pytest.raises(RuntimeError) as err:
        create_backbone(name, "imagenet")
    message = str(err.value)
    filename = os.path.basename(torchvision.models.get_model_weights(name).DEFAULT.url)
    assert filename in message and str(folder) in message
    assert "$TORCH_HOME/hub/checkpoints/" in message and "weights = \"none\"" in message
    assert len(calls) == 1  # one download attempt, answered by the fake network


@pytest.mark.parametrize("name", ["conv4", "resnet12"])
def test_imagenet_weights_for_few_shot_backbones_are_refused(name):
    with pytest.raises(ValueError, match="has no ImageNet weights.*weights = \"none\""):
        create_backbone(name, "imagenet")


def test_weights_none_string_means_random_init():
    a, b = create_backbone("conv4", "none", seed=1), create_backbone("conv4", None, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def _perturbed(name: str) -> dict[str, torch.Tensor]:
    return {k: v + 1.0 if v.is_floating_point() else v for k, v in create_backbone(name, seed=9).state_dict().items()}


def _loads(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name,layout", [("conv4", "state_dict"), ("conv4", "prefixed_state_dict"),
                                         ("conv4", "model_entry"), ("conv4", "backbone_entry"),
                                         ("resnet12", "backbone_entry")])
def test_checkpoint_path_loads_the_backbone_part(tmp_path, name, layout):
    state = _perturbed(name)
    prefixed = {f"backbone.{k}": v for k, v in state.items()} | {"head.weight": torch.zeros(3, 4)}
    obj = {"state_dict": state, "prefixed_state_dict": prefixed,
           "model_entry": {"model": prefixed, "config": {"lr": 0.1}},
           "backbone_entry": {"model": prefixed, "backbone": state, "config": {}, "meta": {"backbone": name}}}[layout]
    torch.save(obj, tmp_path / "ckpt.pt")
    assert _loads(create_backbone(name, tmp_path / "ckpt.pt"), state)


def test_checkpoint_made_for_another_backbone_is_refused_by_name(tmp_path):
    torch.save({"backbone": _perturbed("conv4"), "meta": {"backbone": "conv4"}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match='holds a conv4 backbone, but resnet12 was asked for; set the config key '
                                         'backbone = "conv4"'):
        create_backbone("resnet12", tmp_path / "c.pt")


def test_state_dict_of_another_architecture_names_the_mismatching_keys(tmp_path):
    torch.save(_perturbed("conv4"), tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c.pt does not fit this ResNet12 backbone: missing \['layers"):
        create_backbone("resnet12", tmp_path / "c.pt")


def test_missing_weights_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        create_backbone("conv4", Path(tmp_path / "nope.pt"))
