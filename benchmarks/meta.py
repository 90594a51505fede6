"""learn2learn's meta-learners in the episodic protocol: ``maml`` and ``anil`` on frozen ImageNet features.

Each is meta-trained (one phase, :func:`train_meta`) on tasks of the background training classes with
the project's sampler and trainer (:class:`fewshot.training.meta.MetaObjective` under
:func:`fewshot.training.loop.fit`), its epoch chosen on episodes of the held-out background classes. The
episodic evaluator then scores the meta-trained model (:func:`meta_head`) on the same fixed seeded
episodes as every other method: ``fit`` adapts a fresh clone to each episode's support set.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fewshot.methods import FewShotClassifier
from fewshot.training.loop import fit
from fewshot.training.meta import MetaObjective

if TYPE_CHECKING:
    from benchmarks.config import BenchmarkConfig
    from benchmarks.context import RunContext
    from benchmarks.embeddings import EpisodicSplit

ALGORITHMS = ("maml", "anil")
_LOADED: dict[tuple[str, float], FewShotClassifier] = {}  # checkpoint (path, mtime) -> model: loaded once


def build_meta(cfg: BenchmarkConfig, algorithm: str, d: int) -> FewShotClassifier:
    """An un-trained MAML / ANIL with the config's body on d-dimensional features (seeded init)."""
    from fewshot.methods.anil import ANIL
    from fewshot.methods.maml import MAML

    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown meta-learner {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    m = cfg.meta
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's global RNG as it was
        torch.manual_seed(cfg.seed)
        # LayerNorm without parameters first: ImageNet features have large, uneven scales, which made the
        # inner loop's SGD steps diverge on the real catalogue (train loss ~30, validation at chance)
        body = nn.Sequential(nn.LayerNorm(d, elementwise_affine=False), nn.Linear(d, m.hidden), nn.ReLU())
    if algorithm == "anil":
        return ANIL(body, inner_lr=m.inner_lr, adaptation_steps=m.adaptation_steps)
    return MAML(body, inner_lr=m.inner_lr, adaptation_steps=m.adaptation_steps, first_order=m.first_order)


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


def meta_head(algorithm: str) -> Any:
    """The head factory of ``maml`` / ``anil``: the meta-trained model in ``checkpoint`` (the same object
    for every episode: its ``fit`` adapts a clone and leaves the meta-parameters as they are)."""

    def head(cfg: BenchmarkConfig, base_mean: torch.Tensor, checkpoint: str | Path | None = None) -> FewShotClassifier:
        if checkpoint is None:
            raise ValueError(f"{algorithm} scores with its meta-trained model: pass checkpoint=<its best.pt>")
        path = Path(checkpoint)
        key = (str(path.resolve()), path.stat().st_mtime)
        if key not in _LOADED:
            state = torch.load(path, map_location="cpu", weights_only=False)
            model = build_meta(cfg, algorithm, int(state["meta"]["feature_dim"]))
            model.load_state_dict(state["model"])
            _LOADED[key] = model.eval()
        return _LOADED[key]

    return head
