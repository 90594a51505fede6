"""The benchmark's configuration: one frozen dataclass tree, loaded from ``benchmarks/configs/*.toml``.

``seed``, ``device`` and ``cpu_amp`` are set once at the top level and applied to every training table
(the ``seed``/``device``/``cpu_amp`` keys inside ``[stage1]``, ``[stage2]``, ``[background]`` and
``[protonet.train]`` are overwritten), so one run has one seed.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

from baselines.two_stage import TwoStageConfig
from benchmarks.methods import available_method_names, check_methods
from fewshot.models.backbones import available_backbones
from fewshot.training.episodic import EpisodeConfig
from fewshot.training.loop import TrainConfig

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class DataConfig:
    """``source``: "path" reads ``--data`` / ``$FEWSHOT_DATA``; "synthetic" writes a synthetic dataset
    (``synth_classes``, ``synth_images``) into the run folder first."""

    source: Literal["path", "synthetic"] = "path"
    image_size: tuple[int, int] = (80, 60)
    synth_classes: int = 40
    synth_images: int = 3000
    n_head: int = 20
    min_train: int = 1
    min_images: int = 20
    skip_bad_rows: bool = False  # leave malformed styles.csv rows out (reported) instead of stopping
    # Pixel-identical copies: the episodic protocol keeps one image per group, the transfer protocol drops
    # test images whose copy is in train (both counted in summary.json's "duplicates").
    dedupe: bool = True

    def __post_init__(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"data.image_size={list(self.image_size)} must be [height, width], each >= 8")
        for name in ("synth_classes", "synth_images", "n_head", "min_train", "min_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name}={getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class ProtoNetConfig:
    """``init``: "supervised" starts each ProtoNet from the matching supervised backbone (stage 1 for
    the transfer protocol, the background classifier for the episodic one), then trains episodically
    (Chen et al. 2021's Meta-Baseline recipe, which CPU budgets need); "scratch" trains from random
    weights as Snell et al. did. ``val_classes``: fraction of background classes held out (whole) to
    select epochs for the episodic protocol's models."""

    init: Literal["supervised", "scratch"] = "supervised"
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, optimizer="sgd", lr=0.01,
                                                                   warmup_epochs=0.0))


@dataclass(frozen=True)
class LongTailConfig:
    """The linear classifiers of ``crt``, ``tau_norm`` and ``logit_adjust`` on cached features: training
    schedule, the weight-decay and tau grids they choose from on validation images carved (a
    ``val_fraction`` per class) from the group's train images, never from test images."""

    epochs: int = 10
    lr: float = 1e-3  # Adam's step
    batch_size: int = 256
    weight_decays: tuple[float, ...] = (1e-4, 1e-2)
    taus: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"longtail: epochs={self.epochs} and batch_size={self.batch_size} must be >= 1 and "
                             f"lr={self.lr} > 0")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise ValueError(f"longtail.weight_decays={list(self.weight_decays)} must be non-negative, at least one")
        if not self.taus or min(self.taus) < 0:
            raise ValueError(f"longtail.taus={list(self.taus)} must be non-negative, at least one")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"longtail.val_fraction={self.val_fraction} must lie in (0, 1)")

    def probe(self) -> dict:
        """The keyword arguments the three methods share."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "weight_decays": self.weight_decays, "val_fraction": self.val_fraction}


@dataclass(frozen=True)
class EvalConfig:
    """Episodic settings (``ways`` x ``shots``, ``n_query`` queries, ``episodes`` fixed seeded episodes),
    the K-shot prototype study (``kshot`` with ``kshot_draws`` seeded draws) and the normalisation and
    distance of the nearest-centroid methods (``centroid_*`` and ``baseline_centroid``)."""

    episodes: int = 1000
    ways: tuple[int, ...] = (2, 5, 15)
    shots: tuple[int, ...] = (1, 5)
    n_query: int = 15
    kshot: tuple[int, ...] = (1, 5, 10, 20)
    kshot_draws: int = 5
    normalize: Literal["none", "l2n", "cl2n"] = "cl2n"
    distance: Literal["euclidean", "cosine"] = "euclidean"
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name, least in (("episodes", 1), ("n_query", 1), ("kshot_draws", 1), ("batch_size", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"evaluation.{name}={getattr(self, name)} must be >= {least}")
        # 1-way episodes are always right: they measure nothing
        for name, least in (("ways", 2), ("shots", 1), ("kshot", 1)):
            values = getattr(self, name)
            if not values or min(values) < least or len(set(values)) != len(values):
                raise ValueError(f"evaluation.{name}={list(values)} must be distinct values >= {least}, at least one")


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str = "custom"
    seed: int = 0
    device: str = "auto"
    cpu_amp: bool = False
    backbone: str = "resnet18"
    weights: str = "none"
    freeze_backbone: bool = False
    # every registered method (benchmarks/methods.py) whose extras are installed, in the registry's order
    methods: tuple[str, ...] = field(default_factory=available_method_names)
    # the frozen ImageNet backbone of centroid_imagenet ("pretraining alone"), whatever ``backbone`` is
    reference_backbone: str = "efficientnet_lite0"
    val_classes: float = 0.2
    data: DataConfig = field(default_factory=DataConfig)
    stage1: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=0.05))
    stage2: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=0.01, class_weights="inverse",
                                                                    val_min_per_class=0))
    # two_stage_joint's stage 2: from stage 1, on head + tail train images together
    stage2_joint: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=0.01, class_weights="inverse",
                                                                          val_min_per_class=0))
    background: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=0.05))
    longtail: LongTailConfig = field(default_factory=LongTailConfig)
    protonet: ProtoNetConfig = field(default_factory=ProtoNetConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_methods(self.methods)
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device={self.device!r} is not one of auto, cpu, cuda, cuda:N")
        for key in ("backbone", "reference_backbone"):
            if getattr(self, key) not in available_backbones():
                raise ValueError(f"{key}={getattr(self, key)!r} is unknown; known: {', '.join(available_backbones())}")
        if not 0.0 < self.val_classes < 1.0:
            raise ValueError(f"val_classes={self.val_classes} must lie in (0, 1)")

    def train(self, which: str) -> TrainConfig:
        """The training table ``which`` with the run's seed, device and cpu_amp applied."""
        table = self.protonet.train if which == "protonet" else getattr(self, which)
        return dataclasses.replace(table, seed=self.seed, device=self.device, cpu_amp=self.cpu_amp)

    def two_stage(self) -> TwoStageConfig:
        return TwoStageConfig(backbone=self.backbone, weights=self.weights, freeze_backbone=self.freeze_backbone,
                              stage1=self.train("stage1"), stage2=self.train("stage2"),
                              stage2_joint=self.train("stage2_joint"))
