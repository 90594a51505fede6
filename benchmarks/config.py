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
from fewshot.methods.fusion_functional import DEFAULT_THRESHOLDS, DEFAULT_WEIGHTS
from fewshot.models.backbones import available_backbones, check_weights
from fewshot.training.episodic import EpisodeConfig
from fewshot.training.loop import TrainConfig
from fewshot.training.meta import MetaConfig

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


_SPLIT_KEYS = ("split", "split_key", "train_values", "test_values", "test_fraction", "class_split",
               "background_classes", "evaluation_classes", "background_fraction")


@dataclass(frozen=True)
class DataConfig:
    """``source``: "path" reads ``--data`` / ``$FEWSHOT_DATA`` (a Kaggle folder, an image folder or a CSV
    manifest); "synthetic" writes a synthetic dataset (``synth_classes``, ``synth_images``) into the run folder
    first, unless ``--data`` is given on the command line.

    The transfer protocol's train/test split (:class:`fewshot.data.rules.SplitRule`), ``split``: "auto" takes
    the layout's own (Kaggle: even years train, odd years test; a manifest's ``split`` column; an image folder's
    ``train/`` and ``test/``), else a seeded stratified split with ``test_fraction``; "column" splits on the
    column ``split_key`` (``train_values`` -> train, ``test_values`` -> test; "even"/"odd" match integers by
    parity; an empty list takes every other value); "stratified" draws the seeded stratified split always.

    The episodic protocol's classes (:class:`fewshot.data.rules.ClassSplit`), ``class_split``: "auto" reads
    the class-list files ``background_classes`` / ``evaluation_classes`` when given (one of them: the other
    is every other class), else the layout's own lists (Kaggle: the shipped ones), else a seeded split of the
    classes with at least ``min_images`` images, ``background_fraction`` of them to background; "lists"
    requires files (or the Kaggle layout); "fraction" draws the seeded split always. Seeded splits use the
    run's ``seed``; what was used is written to run.json and, per image, to split.csv.
    """

    source: Literal["path", "synthetic"] = "path"
    image_size: tuple[int, int] = (80, 60)
    synth_classes: int = 40
    synth_images: int = 3000
    n_head: int = 20
    min_train: int = 1
    min_images: int = 20
    skip_bad_rows: bool = False  # leave malformed styles.csv rows out (reported) instead of stopping
    # Settings the data cannot hold (episode sizes, ways, n_head, min_images, methods or a protocol that cannot
    # run) are lowered to what it holds, each change stated (run.json's "fitted", summary.md), instead of
    # refused; a key given on the command line is never changed (benchmarks.protocols.feasibility).
    fit_to_data: bool = False
    # Pixel-identical copies: the episodic protocol keeps one image per group, the transfer protocol drops
    # test images whose copy is in train (both counted in summary.json's "duplicates").
    dedupe: bool = True
    split: Literal["auto", "column", "stratified"] = "auto"
    split_key: str = "split"
    train_values: tuple[str, ...] = ("train",)
    test_values: tuple[str, ...] = ("test",)
    test_fraction: float = 0.25
    class_split: Literal["auto", "lists", "fraction"] = "auto"
    background_classes: str = ""  # a text file, one class name per line
    evaluation_classes: str = ""
    background_fraction: float = 0.6

    def __post_init__(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"data.image_size={list(self.image_size)} must be [height, width], each >= 8")
        for name in ("synth_classes", "synth_images", "n_head", "min_train", "min_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name}={getattr(self, name)} must be >= 1")
        for name in ("test_fraction", "background_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"data.{name}={getattr(self, name)} must lie in (0, 1)")
        if self.split == "column" and not (self.split_key and (self.train_values or self.test_values)):
            raise ValueError("data.split = \"column\" needs data.split_key and data.train_values or data.test_values")

    def split_inputs(self) -> dict:
        """The split settings that differ from their defaults (none for the Kaggle protocol as published): what
        the training phases' keys add, so that ``--resume`` refuses to change the split under a finished phase."""
        defaults = DataConfig()
        return {k: getattr(self, k) for k in _SPLIT_KEYS if getattr(self, k) != getattr(defaults, k)}

    def protocol_settings(self, seed: int) -> dict:
        """The keyword arguments of :func:`fewshot.data.protocols.split_rule_for` and ``class_split_for``."""
        return {"split": self.split, "split_key": self.split_key, "train_values": self.train_values,
                "test_values": self.test_values, "test_fraction": self.test_fraction,
                "class_split": self.class_split, "background_classes": self.background_classes,
                "evaluation_classes": self.evaluation_classes, "background_fraction": self.background_fraction,
                "seed": seed}


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
class TextConfig:
    """The product-name branch (``text``, ``fusion_gate``, ``fusion_product``): ``encoder`` ("tfidf", "bow"
    (binary word 1-2-grams), or "minilm" with its optional packages) fitted on train names only,
    ``max_features`` TF-IDF / bag-of-words columns, and ``classifier``, the feature-based method fitted on the
    text features; a linear classifier takes [longtail]'s schedule and tau grid with ``weight_decays`` from
    here ("logreg": a class-balanced logistic regression, nothing chosen on validation)."""

    encoder: Literal["tfidf", "minilm", "bow"] = "tfidf"
    max_features: int = 8192
    classifier: Literal["centroid", "crt", "tau_norm", "logit_adjust", "logreg"] = "tau_norm"
    weight_decays: tuple[float, ...] = (1e-2,)

    def __post_init__(self) -> None:
        if self.max_features < 2:
            raise ValueError(f"text.max_features={self.max_features} must be >= 2")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise ValueError(f"text.weight_decays={list(self.weight_decays)} must be non-negative, at least one")


@dataclass(frozen=True)
class FusionConfig:
    """``image_method``: the image-only method whose probabilities are fused with the text's (a
    feature-based transfer method, named here, never chosen on test images); temperatures, the gate's
    direction and threshold (from ``thresholds``) and the product's image weight (from ``weights``) are
    chosen on ``val_fraction`` of each group's train images (by the run's validation rule)."""

    image_method: str = "tau_norm"
    val_fraction: float = 0.2
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    weights: tuple[float, ...] = DEFAULT_WEIGHTS  # the image's weight in the weighted product

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"fusion.val_fraction={self.val_fraction} must lie in (0, 1)")
        for name in ("thresholds", "weights"):
            grid = getattr(self, name)
            if not grid or min(grid) < 0 or max(grid) > 1:
                raise ValueError(f"fusion.{name}={list(grid)} must lie in [0, 1], at least one")


@dataclass(frozen=True)
class MetaLearnConfig:
    """``maml`` and ``anil`` (learn2learn): a body ``LayerNorm, Linear(d, hidden), ReLU`` on frozen ImageNet features
    of ``reference_backbone`` (the budget-fitting backbone: no image passes through a trained network),
    meta-trained on ``tasks`` of the background training classes, the epoch chosen on held-out background
    classes. ``inner_lr`` / ``adaptation_steps``: the inner loop, in training and evaluation;
    ``first_order``: MAML's meta-gradient (FOMAML when true); ANIL's is always second-order (head only)."""

    hidden: int = 512
    inner_lr: float = 0.5
    adaptation_steps: int = 5
    first_order: bool = True
    tasks: MetaConfig = field(default_factory=lambda: MetaConfig(n_way=5, n_shot=5, n_query=10, meta_batch=4,
                                                                 steps_per_epoch=100, val_way=5, val_shot=5,
                                                                 val_query=15, val_episodes=200))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=5, optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, amp=False, channels_last=False))

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.adaptation_steps < 1 or not self.inner_lr > 0:
            raise ValueError(f"meta: hidden={self.hidden} and adaptation_steps={self.adaptation_steps} must be >= 1, "
                             f"inner_lr={self.inner_lr} > 0")


@dataclass(frozen=True)
class ValidationConfig:
    """How every choice made on validation carves its validation images out of train images (the trainer's
    epoch, the long-tail heads' weight decay / tau / epochs, the text classifier, the fusion's temperatures,
    gate and weight): ``rule = "group"`` holds out whole groups of each class, a group being the images that
    share the values of the ``group_key`` columns (Kaggle: ``year`` and ``season``), with pixel-identical copies
    always on one side (:mod:`fewshot.data.validation`); ``"stratified"`` draws a random share of each class.
    Each choice keeps its own fraction (``longtail.val_fraction``, a training table's ``val_fraction``...).
    A group rule on data without those columns, or whose every class lies in one group, falls back to
    stratified, and the run says so (run.json, summary.md)."""

    rule: Literal["stratified", "group"] = "group"
    group_key: tuple[str, ...] = ("year", "season")

    def __post_init__(self) -> None:
        if self.rule == "group" and not self.group_key:
            raise ValueError('validation.rule = "group" needs validation.group_key, the columns that form a group')


@dataclass(frozen=True)
class StatisticsConfig:
    """The intervals on the transfer figures: a class-stratified bootstrap of the test images (``n_resamples``
    resamples, seeded by the run's seed) gives each figure's ``level`` interval and paired intervals of
    differences: every method against ``reference`` (in the joint group, ``joint_reference``), and the
    ``leaders`` best methods of each group (plus the best of each input) against each other. A Friedman test
    with Nemenyi's post-hoc over the per-class accuracies ranks each group's methods."""

    n_resamples: int = 1000
    level: float = 0.95
    reference: str = "two_stage"
    joint_reference: str = "two_stage_joint"
    leaders: int = 3

    def __post_init__(self) -> None:
        if self.n_resamples < 1 or self.leaders < 1 or not 0.5 <= self.level < 1.0:
            raise ValueError(f"statistics: n_resamples={self.n_resamples} and leaders={self.leaders} must be >= 1, "
                             f"level={self.level} in [0.5, 1)")


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str = "custom"
    seed: int = 0
    # more seeds for the methods that are cheap to repeat (on cached features): each runs once per seed of
    # ``seeds`` (empty: ``seed`` alone), the trained backbones once (with ``seed``) unless ``seed_backbones``
    seeds: tuple[int, ...] = ()
    seed_backbones: bool = False
    device: str = "auto"
    cpu_amp: bool = False
    backbone: str = "resnet18"
    weights: str = "none"
    freeze_backbone: bool = False
    # the methods to run; empty: every registered method whose extras are installed, in the registry's order
    # (benchmarks.registry.methods.resolve_config fills it in, and checks every name, when a run starts)
    methods: tuple[str, ...] = ()
    # the protocols to run (a method runs in those of its protocols listed here)
    protocols: tuple[str, ...] = ("transfer", "episodic")
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
    text: TextConfig = field(default_factory=TextConfig)
    meta: MetaLearnConfig = field(default_factory=MetaLearnConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    protonet: ProtoNetConfig = field(default_factory=ProtoNetConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)

    def __post_init__(self) -> None:
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device={self.device!r} is not one of auto, cpu, cuda, cuda:N")
        for key in ("backbone", "reference_backbone"):
            if getattr(self, key) not in available_backbones():
                raise ValueError(f"{key}={getattr(self, key)!r} is unknown; known: {', '.join(available_backbones())}")
        check_weights(self.backbone, self.weights)  # a weights value no phase could load: refused before any work
        if not 0.0 < self.val_classes < 1.0:
            raise ValueError(f"val_classes={self.val_classes} must lie in (0, 1)")
        if any(s < 0 for s in (self.seed, *self.seeds)) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seed={self.seed} and seeds={list(self.seeds)} must be distinct integers >= 0")
        if not self.protocols or set(self.protocols) - {"transfer", "episodic"} or \
                len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols={list(self.protocols)} must be distinct values among transfer, episodic, "
                             "at least one")

    def all_seeds(self) -> tuple[int, ...]:
        """``seed`` first, then the other ``seeds`` (the figures and predictions are ``seed``'s)."""
        return (self.seed, *(s for s in self.seeds if s != self.seed))

    def train(self, which: str) -> TrainConfig:
        """The training table ``which`` with the run's seed, device and cpu_amp applied."""
        table = {"protonet": self.protonet.train, "meta": self.meta.train}.get(which) or getattr(self, which)
        return dataclasses.replace(table, seed=self.seed, device=self.device, cpu_amp=self.cpu_amp)

    def two_stage(self) -> TwoStageConfig:
        return TwoStageConfig(backbone=self.backbone, weights=self.weights, freeze_backbone=self.freeze_backbone,
                              stage1=self.train("stage1"), stage2=self.train("stage2"),
                              stage2_joint=self.train("stage2_joint"))
