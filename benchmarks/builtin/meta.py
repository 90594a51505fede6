"""learn2learn's meta-learners in the episodic protocol: ``maml`` and ``anil`` on frozen ImageNet features.

Each is meta-trained (one phase, :func:`train_meta`) on tasks of the background training classes with the
project's sampler and trainer (:class:`fewshot.training.meta.MetaObjective` under
:func:`fewshot.training.loop.fit`), its epoch chosen on episodes of the held-out background classes. Its
embedding (``maml_bg`` / ``anil_bg``) is scored on the ``imagenet`` embedding's features with the meta-trained
model, which the episodic evaluator loads once (``load_model``) and passes to the method's classifier factory
(:func:`meta_classifier`); ``fit`` adapts a fresh clone to each episode's support set.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.builtin.embeddings import episode_needs, episodic_data, train_inputs
from benchmarks.config import BenchmarkConfig
from benchmarks.engine.context import RunContext
from benchmarks.engine.episodic_split import EpisodicSplit
from benchmarks.engine.feasibility import ClassCounter, EpisodeNeed
from benchmarks.registry.embeddings import Embedding, register_embedding
from fewshot.config import to_dict
from fewshot.methods import FewShotClassifier
from fewshot.training.loop import fit
from fewshot.training.meta import MetaObjective
from fewshot.utils.seeding import seeded_global_rng


def _maml(body: nn.Module, cfg: BenchmarkConfig) -> FewShotClassifier:
    from fewshot.methods.maml import MAML  # needs learn2learn: imported when one is built

    m = cfg.meta
    return MAML(body, inner_lr=m.inner_lr, adaptation_steps=m.adaptation_steps, first_order=m.first_order)


def _anil(body: nn.Module, cfg: BenchmarkConfig) -> FewShotClassifier:
    from fewshot.methods.anil import ANIL

    return ANIL(body, inner_lr=cfg.meta.inner_lr, adaptation_steps=cfg.meta.adaptation_steps)


# meta-learner -> how it wraps the body (ANIL's second-order inner loop adapts the head only)
ALGORITHMS: dict[str, Callable[[nn.Module, BenchmarkConfig], FewShotClassifier]] = {"maml": _maml, "anil": _anil}


def build_meta(cfg: BenchmarkConfig, algorithm: str, d: int) -> FewShotClassifier:
    """An un-trained MAML / ANIL with the config's body on d-dimensional features (seeded init)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown meta-learner {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    with seeded_global_rng(cfg.seed):  # a seeded init that leaves the caller's random streams as they were
        # LayerNorm without parameters first: ImageNet features have large, uneven scales, which made the
        # inner loop's SGD steps diverge on the real catalogue (train loss ~30, validation at chance)
        body = nn.Sequential(nn.LayerNorm(d, elementwise_affine=False), nn.Linear(d, cfg.meta.hidden), nn.ReLU())
    return ALGORITHMS[algorithm](body, cfg)


def train_meta(ctx: RunContext, split: EpisodicSplit, algorithm: str, out_dir: Path) -> str:
    """Meta-train ``algorithm`` on ImageNet features of the background training classes; returns its
    best checkpoint (chosen on held-out background classes)."""
    cfg = ctx.cfg
    # The background training rows are embedded with the evaluation rows, as centroid_imagenet's episodic
    # evaluation embeds them: one feature-cache entry serves both.
    shared = ctx.features("imagenet", np.concatenate([split.train_idx, split.protocol.evaluation_idx]),
                          cfg.reference_backbone)
    val = ctx.features("imagenet", split.val_idx, cfg.reference_backbone)
    rows = np.concatenate([split.train_idx, split.val_idx])
    feats = torch.cat([shared[: len(split.train_idx)], val])
    positions = np.arange(len(rows))
    model = build_meta(cfg, algorithm, feats.shape[1])
    objective = MetaObjective(feats, ctx.labels[rows], positions[: len(split.train_idx)],
                              positions[len(split.train_idx):], cfg.meta.tasks, cfg.train("meta"))
    fit(model, objective, cfg.train("meta"), out_dir, resume=True, progress=ctx.progress,
        meta={"method": algorithm, "backbone": cfg.reference_backbone, "features": "imagenet",
              "feature_dim": int(feats.shape[1]), "classes": list(split.train_classes)})
    return str(out_dir / "best.pt")


def load_meta(algorithm: str) -> Callable[[BenchmarkConfig, Path], FewShotClassifier]:
    """``load_model`` of the ``<algorithm>_bg`` embedding: the meta-trained model in its checkpoint."""

    def load(cfg: BenchmarkConfig, checkpoint: Path) -> FewShotClassifier:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model = build_meta(cfg, algorithm, int(state["meta"]["feature_dim"]))
        model.load_state_dict(state["model"])
        return model.eval()

    return load


def meta_classifier(cfg: BenchmarkConfig, base_mean: torch.Tensor, model: FewShotClassifier | None = None
                    ) -> FewShotClassifier:
    """The classifier factory of ``maml`` / ``anil``: the meta-trained ``model`` itself (the same object for
    every episode: its ``fit`` adapts a clone and leaves the meta-parameters as they are)."""
    if model is None:
        raise ValueError("a meta-learner scores with its meta-trained model: pass model= (its embedding's load_model)")
    return model


def _meta_inputs(algorithm: str) -> Callable[[BenchmarkConfig], dict]:
    def inputs(cfg: BenchmarkConfig) -> dict:
        return {"algorithm": algorithm, "backbone": cfg.reference_backbone, "weights": "imagenet",
                "seed": cfg.seed, "cpu_amp": cfg.cpu_amp, **episodic_data(cfg),
                "meta": {**to_dict(cfg.meta), "train": train_inputs(cfg, "meta")}}

    return inputs


def _trainer(algorithm: str) -> Callable[[RunContext, EpisodicSplit, "Path | None"], str]:
    def train(ctx: RunContext, split: EpisodicSplit, start: Path | None) -> str:
        return train_meta(ctx, split, algorithm, ctx.out / algorithm)

    return train


def _needs(algorithm: str) -> Callable[[BenchmarkConfig, EpisodicSplit, ClassCounter], tuple[EpisodeNeed, ...]]:
    """meta.tasks on the background training classes, validated on the held-out ones (as :func:`train_meta`)."""
    def needs(cfg: BenchmarkConfig, split: EpisodicSplit, counter: ClassCounter) -> tuple[EpisodeNeed, ...]:
        return episode_needs(cfg, "meta.tasks", f"{algorithm.upper()} ({algorithm}_train)",
                             "the background training classes (the others are held out for validation)", counter,
                             split.train_idx, split.val_idx)

    return needs


# Meta-learned on frozen ImageNet features: the checkpoint holds the meta-learner, not a backbone.
for _algorithm in ALGORITHMS:
    register_embedding(Embedding(f"{_algorithm}_bg", "episodic", f"{_algorithm}_train", f"{_algorithm}/best.pt",
                                 _trainer(_algorithm), _meta_inputs(_algorithm), features_from="imagenet",
                                 load_model=load_meta(_algorithm), per_seed=True, needs=_needs(_algorithm)))
