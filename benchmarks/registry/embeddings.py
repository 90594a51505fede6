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
    embedded = ctx.features(weights_of(ctx, emb), flat, emb.backbone(ctx.cfg))
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
    per_seed: cheap enough to train again for each seed of ``cfg.seeds`` (a meta-learner on cached features);
        a trained backbone is trained once unless ``cfg.seed_backbones``.
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
    per_seed: bool = False

    @property
    def frozen(self) -> bool:
        return self.train is None

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


def retrained_per_seed(cfg: BenchmarkConfig) -> frozenset[str]:
    """The embeddings another seed of the run trains again: the ``per_seed`` ones, every trained one with
    ``cfg.seed_backbones``."""
    return frozenset(e.name for e in _EMBEDDINGS.values()
                     if not e.frozen and (e.per_seed or cfg.seed_backbones))


def owner_of(ctx: RunContext, emb: Embedding) -> RunContext:
    """The context that trains ``emb``: ``ctx``, or the main seed's for an embedding another seed reuses."""
    return ctx if ctx.owns(emb.name) else ctx.main


def embedding_phase(ctx: RunContext, emb: Embedding) -> str:
    """The name of the phase that makes ``emb`` for ``ctx`` (``<phase>@seed<n>`` when a seed trains its own)."""
    return owner_of(ctx, emb).phase_name(emb.phase)


def checkpoint_of(ctx: RunContext, emb: Embedding) -> Path:
    return owner_of(ctx, emb).out / emb.checkpoint


def weights_of(ctx: RunContext, emb: Embedding) -> str:
    """What ``create_backbone`` / ``cached_features`` take for ``emb``: its checkpoint path or "imagenet"."""
    return emb.checkpoint if emb.frozen else str(checkpoint_of(ctx, emb))


def embedding_key(ctx: RunContext, emb: Embedding) -> str:
    """The phase key of ``emb`` in this run (its parent's phase key must be known: train parents first)."""
    owner = owner_of(ctx, emb)
    parent = emb.upstream(owner.cfg)
    upstream = [owner.phases.keys[embedding_phase(owner, get_embedding(parent))]] if parent else []
    return owner.phase_key(emb.phase, emb.inputs(owner.cfg), upstream, embedding_code(emb))


def train_embeddings(ctx: RunContext, protocol_name: str, data: Any, wanted: Sequence[str]) -> dict[str, Any]:
    """Run (or reuse) the phase of every embedding in ``wanted`` and of those they start from, upstream
    first; returns {embedding: phase result}. For another seed of the run, the embeddings it does not train
    again are the main seed's (trained first)."""
    results: dict[str, Any] = {}
    order = list(_EMBEDDINGS)

    def ensure(name: str) -> None:
        if name in results:
            return
        emb = get_embedding(name)
        if emb.protocol not in (protocol_name, "any"):
            raise ValueError(f"embedding {name!r} belongs to the {emb.protocol} protocol, not {protocol_name}")
        owner = owner_of(ctx, emb)
        for parent in (emb.upstream(owner.cfg), emb.features_from):
            if parent is not None:
                ensure(parent)
        key, phase = embedding_key(ctx, emb), embedding_phase(ctx, emb)
        if emb.frozen:  # nothing to compute: the key names the weights for the phases downstream
            ctx.phases.keys[phase] = key
            results[name] = None
            return
        parent = emb.upstream(owner.cfg)
        start = checkpoint_of(owner, get_embedding(parent)) if parent else None
        artifact = (owner.out / emb.checkpoint).relative_to(ctx.main.out)
        results[name] = ctx.phases.run(phase, key, lambda: emb.train(owner, data, start), artifacts=(str(artifact),))

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
