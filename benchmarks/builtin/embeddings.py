"""The built-in image embeddings and their trainers.

Transfer protocol: ``stage1`` (head classes) and ``stage2`` (fine-tuned on the tail from ``stage1``) are the
two-stage baseline's, ``stage2_joint`` (fine-tuned on head + tail from ``stage1``) its joint variant's;
``protonet_base`` and ``protonet_all`` are ProtoNets trained episodically on the head (base) classes' (or head
+ tail) train images, from ``stage1`` when ``protonet.init = "supervised"``. ``imagenet``: the config's
``reference_backbone`` with frozen ImageNet weights, in both protocols.
Episodic protocol: ``background`` is a supervised classifier on the background training classes (Chen et
al. 2019's Baseline), ``protonet_bg`` a ProtoNet trained on the same classes, from ``background``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from baselines.two_stage import StageOutput, ValSplit, train_stage1, train_stage2, train_stage2_joint
from benchmarks.config import BenchmarkConfig
from benchmarks.engine.context import RunContext
from benchmarks.engine.episodic_split import EpisodicSplit
from benchmarks.engine.feasibility import ClassCounter, EpisodeNeed, Setting
from benchmarks.registry.embeddings import Embedding, register_embedding
from fewshot.config import to_dict
from fewshot.data.protocols import TransferProtocol
from fewshot.data.validation import validation_split
from fewshot.methods import ProtoNet
from fewshot.models.backbones import create_backbone, imagenet_weights
from fewshot.models.classifier import Classifier
from fewshot.training.episodic import EpisodicObjective, SupervisedEpisodicValidation
from fewshot.training.loop import fit


def _stage_split(ctx: RunContext, which: str) -> ValSplit | None:
    """The stage's validation split by the run's rule (None: the trainer's own stratified split)."""
    tcfg = ctx.cfg.train(which)
    return ctx.trainer_split(tcfg.val_fraction, tcfg.seed, tcfg.val_min_per_class)


def _train_stage1(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> StageOutput:
    return train_stage1(ctx.images, protocol, ctx.cfg.two_stage(), ctx.out / "two_stage", resume=True,
                        progress=ctx.progress, val_split=_stage_split(ctx, "stage1"))


def _train_stage2(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> StageOutput:
    return train_stage2(ctx.images, protocol, ctx.cfg.two_stage(), ctx.out / "two_stage", start, resume=True,
                        progress=ctx.progress, val_split=_stage_split(ctx, "stage2"))


def _train_stage2_joint(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> StageOutput:
    return train_stage2_joint(ctx.images, protocol, ctx.cfg.two_stage(), ctx.out / "two_stage", start, resume=True,
                              progress=ctx.progress, val_split=_stage_split(ctx, "stage2_joint"))


def train_protonet(ctx: RunContext, train_idx: np.ndarray, val_idx: np.ndarray, start: Path | None,
                   out_dir: Path, meta: dict) -> str:
    """Episodic training of a ProtoNet on ``train_idx`` (validated on episodes of ``val_idx``), from
    ``start``'s backbone or ``cfg.weights``; returns the path of its best checkpoint."""
    cfg = ctx.cfg
    tcfg = cfg.train("protonet")
    weights = start if start is not None else cfg.weights
    model = ProtoNet(create_backbone(cfg.backbone, weights, seed=cfg.seed))
    objective = EpisodicObjective(ctx.images, ctx.labels, train_idx, val_idx, cfg.protonet.episodes, tcfg)
    fit(model, objective, tcfg, out_dir, resume=True, progress=ctx.progress,
        meta={"backbone": cfg.backbone, "method": "protonet", **meta})
    return str(out_dir / "best.pt")


def protonet_rows(cfg: BenchmarkConfig, labels: np.ndarray, protocol: TransferProtocol, classes: str,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of a transfer-protocol ProtoNet: the head (``classes="head"``) or head + tail
    train images, less a ``protonet.train.val_fraction`` of them held out for validation by the run's rule
    (``groups``: its validation groups, :attr:`RunContext.val_groups`; None: stratified)."""
    val_fraction = cfg.protonet.train.val_fraction
    if classes == "head":
        return validation_split(labels, val_fraction, cfg.seed, groups=groups, indices=protocol.head_train)
    pool = np.sort(np.concatenate([protocol.head_train, protocol.tail_train]))
    return validation_split(labels, val_fraction, cfg.seed, groups=groups, indices=pool, min_per_class=0)


def episode_needs(cfg: BenchmarkConfig, table: str, what: str, pool: str, counter: ClassCounter,
                  train: np.ndarray, val: np.ndarray) -> tuple[EpisodeNeed, ...]:
    """The needs of training episodes on ``train`` and validation episodes on ``val`` (none without validation
    rows: nothing is validated then) set by the config table ``table`` ("protonet.episodes", "meta.tasks")."""
    e = cfg.protonet.episodes if table == "protonet.episodes" else cfg.meta.tasks
    need = [EpisodeNeed(f"{what} training episodes", pool, counter.counts(train), Setting(f"{table}.n_way", e.n_way),
                        Setting(f"{table}.n_shot", e.n_shot), Setting(f"{table}.n_query", e.n_query))]
    if len(val):
        need.append(validation_need(cfg, table, what, counter, val))
    return tuple(need)


def validation_need(cfg: BenchmarkConfig, table: str, what: str, counter: ClassCounter, val: np.ndarray,
                    pool: str = "its validation images") -> EpisodeNeed:
    e = cfg.protonet.episodes if table == "protonet.episodes" else cfg.meta.tasks
    return EpisodeNeed(f"{what} validation episodes", pool, counter.counts(val), Setting(f"{table}.val_way", e.val_way),
                       Setting(f"{table}.val_shot", e.val_shot), Setting(f"{table}.val_query", e.val_query))


def _protonet_needs(classes: str) -> Callable[[BenchmarkConfig, TransferProtocol, ClassCounter],
                                               tuple[EpisodeNeed, ...]]:
    phase, words = {"head": ("protonet_train", "the head classes'"),
                    "all": ("protonet_all_train", "the head and tail classes'")}[classes]

    def needs(cfg: BenchmarkConfig, protocol: TransferProtocol, counter: ClassCounter) -> tuple[EpisodeNeed, ...]:
        train, val = protonet_rows(cfg, counter.labels, protocol, classes, counter.groups)
        pool = (f"{words} train images, less the protonet.train.val_fraction={cfg.protonet.train.val_fraction:g} held "
                "out for validation")
        return episode_needs(cfg, "protonet.episodes", f"ProtoNet ({phase})", pool, counter, train, val)

    return needs


def _background_needs(cfg: BenchmarkConfig, split: EpisodicSplit, counter: ClassCounter) -> tuple[EpisodeNeed, ...]:
    return (validation_need(cfg, "protonet.episodes", "background classifier (background_train)", counter,
                            split.val_idx, "the held-out background classes"),)


def _protonet_bg_needs(cfg: BenchmarkConfig, split: EpisodicSplit, counter: ClassCounter) -> tuple[EpisodeNeed, ...]:
    return episode_needs(cfg, "protonet.episodes", "ProtoNet (protonet_bg_train)",
                         "the background training classes (the others are held out for validation)", counter,
                         split.train_idx, split.val_idx)


def _train_protonet_base(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> str:
    train, val = protonet_rows(ctx.cfg, ctx.labels, protocol, "head", ctx.val_groups)
    return train_protonet(ctx, train, val, start, ctx.out / "protonet", {"classes": "head"})


def _train_protonet_all(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> str:
    train, val = protonet_rows(ctx.cfg, ctx.labels, protocol, "all", ctx.val_groups)
    return train_protonet(ctx, train, val, start, ctx.out / "protonet_all", {"classes": "head+tail"})


def _train_background(ctx: RunContext, split: EpisodicSplit, start: Path | None) -> str:
    cfg = ctx.cfg
    tcfg = cfg.train("background")
    labels = np.full(len(ctx.images), -1, dtype=np.int64)
    lookup = {c: i for i, c in enumerate(split.train_classes)}
    labels[split.train_idx] = [lookup[c] for c in split.protocol.articles[split.train_idx]]
    labels[split.val_idx] = ctx.labels[split.val_idx] + len(split.train_classes)  # distinct from training labels
    objective = SupervisedEpisodicValidation(ctx.images, labels, split.train_idx, split.val_idx,
                                             cfg.protonet.episodes, tcfg, n_classes=len(split.train_classes))
    model = Classifier(create_backbone(cfg.backbone, cfg.weights, seed=cfg.seed), len(split.train_classes),
                       seed=cfg.seed)
    out_dir = ctx.out / "background"
    fit(model, objective, tcfg, out_dir, resume=True, progress=ctx.progress,
        meta={"backbone": cfg.backbone, "method": "baseline_centroid", "classes": list(split.train_classes)})
    return str(out_dir / "best.pt")


def _train_protonet_bg(ctx: RunContext, split: EpisodicSplit, start: Path | None) -> str:
    return train_protonet(ctx, split.train_idx, split.val_idx, start, ctx.out / "protonet_bg",
                          {"classes": "background"})


def model_inputs(cfg: BenchmarkConfig) -> dict:
    return {"backbone": cfg.backbone, "weights": cfg.weights, "seed": cfg.seed, "cpu_amp": cfg.cpu_amp,
            "validation": to_dict(cfg.validation)}


def train_inputs(cfg: BenchmarkConfig, which: str) -> dict:
    # The device string ("auto", "cuda:0") is not an input: the device kind the run resolved it to is.
    return {k: v for k, v in to_dict(cfg.train(which)).items() if k != "device"}


def transfer_data(cfg: BenchmarkConfig) -> dict:
    return {"n_head": cfg.data.n_head, "min_train": cfg.data.min_train, **cfg.data.split_inputs()}


def episodic_data(cfg: BenchmarkConfig) -> dict:
    return {"min_images": cfg.data.min_images, "val_classes": cfg.val_classes,
            "val_way": cfg.protonet.episodes.val_way, "dedupe": cfg.data.dedupe, **cfg.data.split_inputs()}


def _protonet(cfg: BenchmarkConfig) -> dict:
    return {**model_inputs(cfg), "protonet": to_dict(cfg.protonet), "train": train_inputs(cfg, "protonet")}


def _supervised_init(cfg: BenchmarkConfig) -> bool:
    """ProtoNets start from the matching supervised backbone only with ``protonet.init = "supervised"``."""
    return cfg.protonet.init == "supervised"


def check_reference_backbone(cfg: BenchmarkConfig) -> None:
    """The frozen ``imagenet`` embedding needs a ``reference_backbone`` that has ImageNet weights."""
    if imagenet_weights(cfg.reference_backbone) is None:
        users = [m for m in cfg.methods if m in ("centroid_imagenet", "maml", "anil")]
        raise ValueError(f"reference_backbone={cfg.reference_backbone!r} has no ImageNet weights, and "
                         f"{', '.join(users) or 'a configured method'} scores its frozen ImageNet features; choose "
                         "one that has (fewshot weights lists them), or leave those methods out")


register_embedding(Embedding("imagenet", "any", "imagenet_weights", "imagenet", None,
                             lambda c: {"backbone": c.reference_backbone, "weights": "imagenet"},
                             checks=(check_reference_backbone,)))
register_embedding(Embedding("stage1", "transfer", "stage1", "two_stage/stage1/best.pt", _train_stage1,
                             lambda c: {**model_inputs(c), **transfer_data(c), "train": train_inputs(c, "stage1")}))
register_embedding(Embedding("stage2", "transfer", "stage2", "two_stage/stage2/best.pt", _train_stage2,
                             lambda c: {**model_inputs(c), **transfer_data(c), "train": train_inputs(c, "stage2"),
                                        "freeze_backbone": c.freeze_backbone}, starts_from="stage1", sees_tail=True))
register_embedding(Embedding("stage2_joint", "transfer", "stage2_joint", "two_stage/stage2_joint/best.pt",
                             _train_stage2_joint,
                             lambda c: {**model_inputs(c), **transfer_data(c), "train": train_inputs(c, "stage2_joint"),
                                        "freeze_backbone": c.freeze_backbone}, starts_from="stage1", sees_tail=True))
register_embedding(Embedding("protonet_base", "transfer", "protonet_train", "protonet/best.pt", _train_protonet_base,
                             lambda c: {**_protonet(c), **transfer_data(c)}, starts_from="stage1",
                             start_if=_supervised_init, needs=_protonet_needs("head")))
register_embedding(Embedding("protonet_all", "transfer", "protonet_all_train", "protonet_all/best.pt",
                             _train_protonet_all, lambda c: {**_protonet(c), **transfer_data(c)}, starts_from="stage1",
                             start_if=_supervised_init, sees_tail=True, needs=_protonet_needs("all")))
register_embedding(Embedding("background", "episodic", "background_train", "background/best.pt", _train_background,
                             lambda c: {**model_inputs(c), **episodic_data(c), "train": train_inputs(c, "background"),
                                        "episodes": to_dict(c.protonet.episodes)}, needs=_background_needs))
register_embedding(Embedding("protonet_bg", "episodic", "protonet_bg_train", "protonet_bg/best.pt",
                             _train_protonet_bg, lambda c: {**_protonet(c), **episodic_data(c)},
                             starts_from="background", start_if=_supervised_init, needs=_protonet_bg_needs))
