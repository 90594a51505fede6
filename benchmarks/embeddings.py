"""The trained backbones (embeddings) that methods score with, each one content-addressed phase.

An :class:`Embedding` says which protocol it belongs to, which phase trains it, which checkpoint holds
its weights (relative to the run folder, so an imported phase brings it along), which embedding it
starts from, and which slice of the config it depends on (the phase key, :mod:`benchmarks.phases`).

Transfer protocol: ``stage1`` (head classes) and ``stage2`` (fine-tuned on the tail from ``stage1``)
are the two-stage baseline's, ``stage2_joint`` (fine-tuned on head + tail from ``stage1``) its joint variant's; ``protonet_head`` and ``protonet_all`` are ProtoNets trained episodically
on the head (or head + tail) train images, from ``stage1`` when ``protonet.init = "supervised"``.
``text`` is not a backbone: product-name features (the text encoder fitted on train names).
``maml_bg`` / ``anil_bg`` are learn2learn meta-learners meta-trained on frozen ImageNet features of the
background training classes (:mod:`benchmarks.meta`).
Episodic protocol: ``background`` is a supervised classifier on the background training classes (Chen et
al. 2019's Baseline), ``protonet_bg`` a ProtoNet trained on the same classes, from ``background``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baselines.two_stage import train_stage1, train_stage2, train_stage2_joint
from benchmarks.config import BenchmarkConfig
from benchmarks.context import RunContext
from benchmarks.methods import BenchmarkMethod
from fewshot.config import to_dict
from fewshot.data.protocols import EpisodicProtocol, TransferProtocol
from fewshot.data.split import stratified_split
from fewshot.methods import ProtoNet
from fewshot.models.backbones import create_backbone
from fewshot.models.classifier import Classifier
from fewshot.training.episodic import EpisodicObjective, SupervisedEpisodicValidation
from fewshot.training.loop import fit
from fewshot.utils.errors import UserError
from fewshot.utils.seeding import derive_seed


@dataclass(frozen=True)
class EpisodicSplit:
    """The episodic protocol with its background classes split (seeded) into training and held-out
    validation classes; every choice of epoch is made on validation-class episodes."""

    protocol: EpisodicProtocol
    train_classes: tuple[str, ...]
    val_classes: tuple[str, ...]
    train_idx: np.ndarray
    val_idx: np.ndarray

    @classmethod
    def make(cls, cfg: BenchmarkConfig, protocol: EpisodicProtocol) -> EpisodicSplit:
        """A ``val_classes`` fraction of the background classes is held out whole, at least enough for
        one validation episode's way."""
        names = protocol.background
        n_val = max(cfg.protonet.episodes.val_way, round(cfg.val_classes * len(names)))
        if n_val >= len(names):
            raise UserError(f"only {len(names)} background classes: cannot hold out {n_val} for validation; "
                            "lower val_classes or protonet.episodes.val_way")
        rng = np.random.default_rng(derive_seed(cfg.seed, "validation classes"))
        held = set(rng.choice(len(names), n_val, replace=False).tolist())
        train = tuple(c for i, c in enumerate(names) if i not in held)
        val = tuple(c for i, c in enumerate(names) if i in held)
        return cls(protocol, train, val, np.flatnonzero(np.isin(protocol.articles, train)),
                   np.flatnonzero(np.isin(protocol.articles, val)))


# (ctx, the protocol's data, the checkpoint of the embedding it starts from or None) -> phase result
Trainer = Callable[[RunContext, Any, "Path | None"], Any]


@dataclass(frozen=True)
class Embedding:
    """``protocol``: "transfer", "episodic" or "any"; ``checkpoint``: the trained weights relative to the
    run folder, or "imagenet" for a frozen pretrained backbone (``train`` None: nothing to train; its
    backbone is the config's ``reference_backbone``). ``sees_tail``: its training saw tail-class images,
    so a K-shot curve on it measures prototype subsampling, not learning from K images."""

    name: str
    protocol: str
    phase: str
    checkpoint: str
    train: Trainer | None
    inputs: Callable[[BenchmarkConfig], dict]
    starts_from: str | None = None  # an embedding whose checkpoint initialises this one
    sees_tail: bool = False
    # "text": product-name features (benchmarks.text); "meta": a meta-learner on frozen ImageNet features
    # (benchmarks.meta), whose checkpoint the method's head loads; else "image", a backbone's features
    kind: str = "image"

    @property
    def frozen(self) -> bool:
        return self.train is None

    def weights(self, out: Path) -> str:
        """What ``create_backbone`` / ``cached_features`` take: a checkpoint path or "imagenet"."""
        return self.checkpoint if self.frozen else str(out / self.checkpoint)

    def backbone(self, cfg: BenchmarkConfig) -> str:
        return cfg.reference_backbone if self.frozen else cfg.backbone

    def upstream(self, cfg: BenchmarkConfig) -> str | None:
        """The embedding this one starts from in ``cfg`` (ProtoNets only with ``init = "supervised"``)."""
        if self.starts_from is not None and self.phase.startswith("protonet") and cfg.protonet.init != "supervised":
            return None
        return self.starts_from


def _train_stage1(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> Any:
    return train_stage1(ctx.images, protocol, ctx.cfg.two_stage(), ctx.out / "two_stage", resume=True,
                        progress=ctx.progress)


def _train_stage2(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> Any:
    return train_stage2(ctx.images, protocol, ctx.cfg.two_stage(), ctx.out / "two_stage", start, resume=True,
                        progress=ctx.progress)


def _train_stage2_joint(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> Any:
    return train_stage2_joint(ctx.images, protocol, ctx.cfg.two_stage(), ctx.out / "two_stage", start, resume=True,
                              progress=ctx.progress)


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


def _train_protonet_head(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> str:
    train, val = stratified_split(ctx.labels, ctx.cfg.protonet.train.val_fraction, ctx.cfg.seed,
                                  indices=protocol.head_train)
    return train_protonet(ctx, train, val, start, ctx.out / "protonet", {"classes": "head"})


def _train_protonet_all(ctx: RunContext, protocol: TransferProtocol, start: Path | None) -> str:
    pool = np.sort(np.concatenate([protocol.head_train, protocol.tail_train]))
    train, val = stratified_split(ctx.labels, ctx.cfg.protonet.train.val_fraction, ctx.cfg.seed, indices=pool,
                                  min_per_class=0)
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


def _train_maml(ctx: RunContext, split: EpisodicSplit, start: Path | None) -> str:
    from benchmarks.meta import train_meta

    return train_meta(ctx, split, "maml", ctx.out / "maml")


def _train_anil(ctx: RunContext, split: EpisodicSplit, start: Path | None) -> str:
    from benchmarks.meta import train_meta

    return train_meta(ctx, split, "anil", ctx.out / "anil")


def _meta(cfg: BenchmarkConfig, algorithm: str) -> dict:
    return {"algorithm": algorithm, "backbone": cfg.reference_backbone, "weights": "imagenet", "seed": cfg.seed,
            "cpu_amp": cfg.cpu_amp, **_episodic_data(cfg), "meta": {**to_dict(cfg.meta), "train": _train(cfg, "meta")}}


def _model(cfg: BenchmarkConfig) -> dict:
    return {"backbone": cfg.backbone, "weights": cfg.weights, "seed": cfg.seed, "cpu_amp": cfg.cpu_amp}


def _train(cfg: BenchmarkConfig, which: str) -> dict:
    # The device string ("auto", "cuda:0") is not an input: the device kind the run resolved it to is.
    return {k: v for k, v in to_dict(cfg.train(which)).items() if k != "device"}


def _transfer_data(cfg: BenchmarkConfig) -> dict:
    return {"n_head": cfg.data.n_head, "min_train": cfg.data.min_train, **cfg.data.split_inputs()}


def _episodic_data(cfg: BenchmarkConfig) -> dict:
    return {"min_images": cfg.data.min_images, "val_classes": cfg.val_classes,
            "val_way": cfg.protonet.episodes.val_way, "dedupe": cfg.data.dedupe, **cfg.data.split_inputs()}


def _protonet(cfg: BenchmarkConfig) -> dict:
    return {**_model(cfg), "protonet": to_dict(cfg.protonet), "train": _train(cfg, "protonet")}


EMBEDDINGS: dict[str, Embedding] = {e.name: e for e in (
    Embedding("imagenet", "any", "imagenet_weights", "imagenet", None,
              lambda c: {"backbone": c.reference_backbone, "weights": "imagenet"}),
    Embedding("stage1", "transfer", "stage1", "two_stage/stage1/best.pt", _train_stage1,
              lambda c: {**_model(c), **_transfer_data(c), "train": _train(c, "stage1")}),
    Embedding("stage2", "transfer", "stage2", "two_stage/stage2/best.pt", _train_stage2,
              lambda c: {**_model(c), **_transfer_data(c), "train": _train(c, "stage2"),
                         "freeze_backbone": c.freeze_backbone}, starts_from="stage1", sees_tail=True),
    Embedding("stage2_joint", "transfer", "stage2_joint", "two_stage/stage2_joint/best.pt", _train_stage2_joint,
              lambda c: {**_model(c), **_transfer_data(c), "train": _train(c, "stage2_joint"),
                         "freeze_backbone": c.freeze_backbone}, starts_from="stage1", sees_tail=True),
    Embedding("protonet_head", "transfer", "protonet_train", "protonet/best.pt", _train_protonet_head,
              lambda c: {**_protonet(c), **_transfer_data(c)}, starts_from="stage1"),
    Embedding("protonet_all", "transfer", "protonet_all_train", "protonet_all/best.pt", _train_protonet_all,
              lambda c: {**_protonet(c), **_transfer_data(c)}, starts_from="stage1", sees_tail=True),
    # Product names, not images: the text encoder is fitted on train names when the features are made.
    Embedding("text", "transfer", "text_features", "text", None,
              lambda c: {"text": {"encoder": c.text.encoder, "max_features": c.text.max_features},
                         **_transfer_data(c), "dedupe": c.data.dedupe}, sees_tail=True, kind="text"),
    Embedding("background", "episodic", "background_train", "background/best.pt", _train_background,
              lambda c: {**_model(c), **_episodic_data(c), "train": _train(c, "background"),
                         "episodes": to_dict(c.protonet.episodes)}),
    Embedding("protonet_bg", "episodic", "protonet_bg_train", "protonet_bg/best.pt", _train_protonet_bg,
              lambda c: {**_protonet(c), **_episodic_data(c)}, starts_from="background"),
    # Meta-learned on frozen ImageNet features: the checkpoint holds the meta-learner, not a backbone.
    Embedding("maml_bg", "episodic", "maml_train", "maml/best.pt", _train_maml, lambda c: _meta(c, "maml"),
              kind="meta"),
    Embedding("anil_bg", "episodic", "anil_train", "anil/best.pt", _train_anil, lambda c: _meta(c, "anil"),
              kind="meta"),
)}


def in_report_order(methods: list[BenchmarkMethod], protocol: str) -> list[BenchmarkMethod]:
    """``methods`` (in registry order) sorted by the training order of the embedding each scores in
    ``protocol``, a method on a more basic backbone first; ties keep the registry's order."""
    order = list(EMBEDDINGS)
    return sorted(methods, key=lambda m: order.index(m.embedding(protocol)))


def get_embedding(name: str) -> Embedding:
    if name not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {name!r}; known: {', '.join(EMBEDDINGS)}")
    return EMBEDDINGS[name]


def train_embeddings(ctx: RunContext, protocol_name: str, data: Any, wanted: list[str]) -> dict[str, Any]:
    """Run (or reuse) the phase of every embedding in ``wanted`` and of those they start from, upstream
    first; returns {embedding: phase result}."""
    results: dict[str, Any] = {}

    def ensure(name: str) -> None:
        if name in results:
            return
        emb = get_embedding(name)
        if emb.protocol not in (protocol_name, "any"):
            raise ValueError(f"embedding {name!r} belongs to the {emb.protocol} protocol, not {protocol_name}")
        parent = emb.upstream(ctx.cfg)
        if parent is not None:
            ensure(parent)
        upstream = [ctx.phases.keys[get_embedding(parent).phase]] if parent else []
        key = ctx.phase_key(emb.phase, emb.inputs(ctx.cfg), upstream)
        if emb.frozen:  # nothing to compute: the key names the weights for the phases downstream
            ctx.phases.keys[emb.phase] = key
            results[name] = None
            return
        start = ctx.out / get_embedding(parent).checkpoint if parent else None
        results[name] = ctx.phases.run(emb.phase, key, lambda: emb.train(ctx, data, start),
                                       artifacts=(emb.checkpoint,))

    for name in sorted(set(wanted), key=list(EMBEDDINGS).index):
        ensure(name)
    return results
