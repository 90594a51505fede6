"""What an embedding is: the features a method scores with, made by one content-addressed phase.

An :class:`Embedding` says which protocol it belongs to, which phase makes it (training a backbone, or
nothing for frozen weights), which checkpoint holds the result (relative to the run folder, so an imported
phase brings it along), which embedding it starts from, which slice of the config it depends on, what it
reads (images or product names) and how its features are computed. The built-in embeddings are registered
by :mod:`benchmarks.builtin`; the phase key of each (:func:`embedding_key`) holds its inputs, the keys of the
phases upstream and the digest of the code that trains it (:mod:`benchmarks.engine.codekey`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from benchmarks.config import BenchmarkConfig
from benchmarks.engine.codekey import code_digest
from benchmarks.engine.context import RunContext
from benchmarks.engine.feasibility import ClassCounter, EpisodeNeed
from fewshot.data.protocols import TransferProtocol

# (ctx, the protocol's data, the checkpoint of the embedding it starts from or None) -> phase result
Trainer = Callable[[RunContext, Any, "Path | None"], Any]
# (ctx, embedding, {part: dataset rows}) -> {part: features [len(rows), d]}
FeatureFn = Callable[[RunContext, "Embedding", dict[str, np.ndarray]], dict[str, torch.Tensor]]
# the transfer protocol's parts, in the order their features are computed
PARTS = ("head_train", "head_test", "tail_train", "tail_test")


def backbone_features(ctx: RunContext, emb: Embedding, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """{part: features [n, d]} of the images of each part, by the embedding's backbone and weights: one
    feature-cache entry per embedding, whatever the methods and groups that read it."""
    order = list(rows)
    flat = np.concatenate([rows[p] for p in order])
    bounds = np.cumsum([0] + [len(rows[p]) for p in order])
    embedded = ctx.features(emb.weights(ctx.out), flat, emb.backbone(ctx.cfg))
    return {p: embedded[bounds[i]:bounds[i + 1]] for i, p in enumerate(order)}


@dataclass(frozen=True)
class Embedding:
    """name: what methods name in ``transfer=`` / ``episodic=``.
    protocol: "transfer", "episodic" or "any".
    phase: the phase that makes it; checkpoint: its weights relative to the run folder, or "imagenet" for a
        frozen pretrained backbone (``train`` None: nothing to train; its backbone is the config's
        ``reference_backbone``).
    train: the trainer (None: frozen); inputs: the slice of the config its phase depends on.
    starts_from: the embedding whose checkpoint initialises this one, when ``start_if(cfg)`` holds.
    sees_tail: its training saw tail-class images, so a K-shot curve on it measures prototype subsampling,
        not learning from K images.
    reads: "image" or "name" (product names): what a method scoring with it takes as input.
    features: how its features are computed (default: the backbone's, :func:`backbone_features`).
    features_from: another embedding whose features it is scored on (a meta-learner on frozen ImageNet
        features), with ``load_model(cfg, checkpoint)`` giving what the method's classifier takes as ``model=``.
    checks: config checks (each raises ValueError with one line) run when a run that uses it starts.
    needs: what its phase's episode samplers need of the data, ``needs(cfg, data, counter)`` (``data``: what
        ``train`` gets; ``counter``: item counts per class of dataset rows), from the rows its trainer uses:
        checked (or fitted, ``data.fit_to_data``) before any phase runs (:mod:`benchmarks.protocols.feasibility`).
    code: more objects whose source keys its phase besides ``train`` (see :mod:`benchmarks.engine.codekey`).
    """

    name: str
    protocol: Literal["transfer", "episodic", "any"]
    phase: str
    checkpoint: str
    train: Trainer | None
    inputs: Callable[[BenchmarkConfig], dict]
    starts_from: str | None = None
    start_if: Callable[[BenchmarkConfig], bool] | None = None
    sees_tail: bool = False
    reads: Literal["image", "name"] = "image"
    features: FeatureFn = backbone_features
    features_from: str | None = None
    load_model: Callable[[BenchmarkConfig, Path], Any] | None = None
    checks: tuple[Callable[[BenchmarkConfig], None], ...] = ()
    needs: Callable[[BenchmarkConfig, Any, ClassCounter], tuple[EpisodeNeed, ...]] | None = None
    code: tuple[Any, ...] = field(default=())

    @property
    def frozen(self) -> bool:
        return self.train is None

    def weights(self, out: Path) -> str:
        """What ``create_backbone`` / ``cached_features`` take: a checkpoint path or "imagenet"."""
        return self.checkpoint if self.frozen else str(out / self.checkpoint)

    def backbone(self, cfg: BenchmarkConfig) -> str:
        return cfg.reference_backbone if self.frozen else cfg.backbone

    def upstream(self, cfg: BenchmarkConfig) -> str | None:
        """The embedding this one starts from in ``cfg``."""
        if self.starts_from is not None and self.start_if is not None and not self.start_if(cfg):
            return None
        return self.starts_from


_EMBEDDINGS: dict[str, Embedding] = {}


def register_embedding(embedding: Embedding) -> Embedding:
    """Add ``embedding`` after the registered ones (its upstream embedding must be registered already)."""
    if embedding.name in _EMBEDDINGS:
        raise ValueError(f"an embedding named {embedding.name!r} is already registered")
    for parent in (embedding.starts_from, embedding.features_from):
        if parent is not None and parent not in _EMBEDDINGS:
            raise ValueError(f"embedding {embedding.name!r} names {parent!r}, which is not registered (yet)")
    _EMBEDDINGS[embedding.name] = embedding
    return embedding


def embeddings() -> tuple[Embedding, ...]:
    """Every registered embedding, in registration order (parents before the embeddings that start from them)."""
    return tuple(_EMBEDDINGS.values())


def get_embedding(name: str) -> Embedding:
    if name not in _EMBEDDINGS:
        raise ValueError(f"unknown embedding {name!r}; known: {', '.join(_EMBEDDINGS)}")
    return _EMBEDDINGS[name]


def embedding_code(emb: Embedding) -> str:
    """The digest of the code that makes ``emb`` (its trainer, features and model loader, and ``code``)."""
    return code_digest(*(f for f in (emb.train, emb.features, emb.load_model) if f is not None), *emb.code)


def embedding_key(ctx: RunContext, emb: Embedding) -> str:
    """The phase key of ``emb`` in this run (its parent's phase key must be known: train parents first)."""
    parent = emb.upstream(ctx.cfg)
    upstream = [ctx.phases.keys[get_embedding(parent).phase]] if parent else []
    return ctx.phase_key(emb.phase, emb.inputs(ctx.cfg), upstream, embedding_code(emb))


def train_embeddings(ctx: RunContext, protocol_name: str, data: Any, wanted: Sequence[str]) -> dict[str, Any]:
    """Run (or reuse) the phase of every embedding in ``wanted`` and of those they start from, upstream
    first; returns {embedding: phase result}."""
    results: dict[str, Any] = {}
    order = list(_EMBEDDINGS)

    def ensure(name: str) -> None:
        if name in results:
            return
        emb = get_embedding(name)
        if emb.protocol not in (protocol_name, "any"):
            raise ValueError(f"embedding {name!r} belongs to the {emb.protocol} protocol, not {protocol_name}")
        for parent in (emb.upstream(ctx.cfg), emb.features_from):
            if parent is not None:
                ensure(parent)
        key = embedding_key(ctx, emb)
        if emb.frozen:  # nothing to compute: the key names the weights for the phases downstream
            ctx.phases.keys[emb.phase] = key
            results[name] = None
            return
        parent = emb.upstream(ctx.cfg)
        start = ctx.out / get_embedding(parent).checkpoint if parent else None
        results[name] = ctx.phases.run(emb.phase, key, lambda: emb.train(ctx, data, start),
                                       artifacts=(emb.checkpoint,))

    for name in sorted(set(wanted), key=order.index):
        ensure(name)
    return results


def embedding_chain(cfg: BenchmarkConfig, name: str) -> tuple[str, ...]:
    """``name`` and every embedding its phase needs first in ``cfg`` (the one it starts from, the one whose
    features it is scored on, and theirs), nearest first."""
    emb = get_embedding(name)
    parents = [p for p in (emb.upstream(cfg), emb.features_from) if p is not None]
    return tuple(dict.fromkeys([name, *(e for p in parents for e in embedding_chain(cfg, p))]))


def transfer_parts(ctx: RunContext, protocol: TransferProtocol, emb: Embedding) -> dict[str, torch.Tensor]:
    """{part: features} of an embedding for :data:`PARTS`, plus the joint group's all_train / all_test: their
    concatenations, head then tail, as ``protocol.all_train`` / ``all_test``."""
    feats = emb.features(ctx, emb, {p: getattr(protocol, p) for p in PARTS})
    for split in ("train", "test"):
        feats[f"all_{split}"] = torch.cat([feats[f"head_{split}"], feats[f"tail_{split}"]])
    return feats
