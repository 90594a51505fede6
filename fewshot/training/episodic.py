"""Episodic training of a Prototypical Network (Snell et al. 2017) with the generic trainer.

Each training step is one N-way K-shot episode drawn by :class:`fewshot.EpisodeSampler` from the train
images: all ``N * (K + Q)`` images go through the backbone in one batch (augmented), the support rows make
the prototypes and the queries' cross-entropy over negative squared distances is the loss. Validation
is the mean accuracy of fixed, seeded episodes over held-out images or classes, evaluated on their
features with the fast episodic evaluator; it picks the best epoch.

    model = ProtoNet(create_backbone("resnet18"))
    objective = EpisodicObjective(images, labels, train_idx, val_idx, EpisodeConfig(), train_config)
    fit(model, objective, train_config, out_dir)
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fewshot.evaluation import episodic_eval
from fewshot.images.augment import augment_uniforms
from fewshot.images.inference import extract_features
from fewshot.images.store import ImageStore
from fewshot.methods.protonet import episode_loss
from fewshot.sampling import EpisodeSampler
from fewshot.training.distributed import gather_rows
from fewshot.training.loop import Objective, TrainConfig
from fewshot.training.supervised import SupervisedObjective
from fewshot.utils.distributed import shard
from fewshot.utils.errors import UserError
from fewshot.utils.seeding import derive_seed


@dataclass(frozen=True)
class EpisodeConfig:
    """Training episodes (``n_way`` may exceed the test way, as in Snell et al.) and validation episodes.
    ``logit_scale``: temperature of the training softmax (see :func:`fewshot.methods.protonet.episode_loss`).
    ``TrainConfig.batch_size`` plays no part: an episode is the batch."""

    n_way: int = 20
    n_shot: int = 5
    n_query: int = 15
    episodes_per_epoch: int = 100
    val_way: int = 5
    val_shot: int = 5
    val_query: int = 15
    val_episodes: int = 300
    logit_scale: float = 1.0


class EpisodicObjective(Objective):
    """ProtoNet loss on episodes of ``labels[train_indices]``; validation on ``labels[val_indices]``.

    ``labels``: [N] ints aligned with ``images`` [N, H, W, 3] uint8 (-1 or anything for unused rows). The
    model must have ``embed(x) -> [B, d]`` (a :class:`fewshot.methods.FewShotClassifier`). Classes with
    fewer than ``n_shot + n_query`` train images are left out of training episodes (``excluded``).

    Under torchrun (:meth:`distribute`) a step is still one episode: a rank embeds images ``i mod world``
    of it (support and queries; batch norm sees the whole episode, see
    :mod:`fewshot.training.distributed`), the embeddings are gathered (differentiably) so that every rank
    has the prototypes, and a rank's loss is its queries' (``i mod world``) share of the episode's.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, train_indices: Sequence[int],
                 val_indices: Sequence[int], episodes: EpisodeConfig, config: TrainConfig) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.train_indices = np.asarray(train_indices, dtype=np.int64)
        self.val_indices = np.asarray(val_indices, dtype=np.int64)
        self.episodes, self.config = episodes, config
        e = episodes
        self.sampler = EpisodeSampler(labels[self.train_indices], e.n_way, e.n_shot, e.n_query,
                                      e.episodes_per_epoch, seed=derive_seed(config.seed, "episodes"),
                                      small_classes="exclude")
        self.val_sampler = validation_sampler(labels[self.val_indices], episodes, config.seed)
        self._images: np.ndarray | None = images
        self.store: ImageStore | None = None
        self.query_labels = torch.arange(e.n_way).repeat_interleave(e.n_query)

    @property
    def excluded(self) -> dict[int, int]:
        """Labels too small for a training episode -> their number of train images."""
        return self.sampler.excluded_classes

    def setup(self, device: torch.device, memory_format: torch.memory_format) -> None:
        if self.store is None:
            self.store = ImageStore(self._images, np.concatenate([self.train_indices, self.val_indices]), device)
            self._images = None
        self.store.to(device)
        self.device, self.memory_format = device, memory_format
        self.train_rows = self.store.rows(self.train_indices)
        self.query_labels = self.query_labels.to(device)

    def distribute(self, rank: int, world: int) -> None:
        e = self.episodes
        if e.n_way * e.n_query < world:
            raise UserError(f"an episode's {e.n_way * e.n_query} queries (n_way * n_query) cannot be shared by "
                            f"{world} processes (every one scores a query); raise them or start fewer processes")
        self.rank, self.world = rank, world

    def steps_per_epoch(self) -> int:
        return self.episodes.episodes_per_epoch

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        # Episodes of epoch e are the sampler's global episodes e * n .. e * n + n - 1: a pure function of
        # (seed, epoch), so a resumed run draws exactly the episodes an uninterrupted one would.
        e = self.episodes
        batch = self.sampler.sample_batch(epoch * e.episodes_per_epoch, e.episodes_per_epoch)
        support = batch[:, :, : e.n_shot].reshape(len(batch), -1)
        query = batch[:, :, e.n_shot:].reshape(len(batch), -1)
        for positions in np.concatenate([support, query], axis=1):
            rows = self.train_rows[torch.from_numpy(positions)]
            if self.world == 1:
                yield self.store.load(rows, self.config.augment, generator, self.memory_format)
                continue
            # This rank's images of the episode, augmented with the draws one process makes for all of them.
            uniforms = augment_uniforms(len(rows), generator) if self.config.augment.enabled else None
            mine = shard(torch.arange(len(rows)), of=self.world, at=self.rank)
            yield self.store.load(rows[mine], self.config.augment, generator, self.memory_format,
                                  uniforms=None if uniforms is None else uniforms[mine])

    def loss(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        e = self.episodes
        feats = model.embed(batch)
        feats = feats if feats.dtype in (torch.float32, torch.float64) else feats.float()  # autocast: fp16/bf16 up
        n_support = e.n_way * e.n_shot
        if self.world > 1:
            n_query = len(self.query_labels)
            feats = gather_rows(feats, n_support + n_query)  # the whole episode's embeddings, on every rank
            mine = shard(torch.arange(n_query, device=feats.device), of=self.world, at=self.rank)
            loss, correct = episode_loss(feats[:n_support], feats[n_support:][mine], self.query_labels[mine],
                                         e.n_way, e.n_shot, e.logit_scale)
            return loss * (len(mine) / n_query), correct, len(mine)
        loss, correct = episode_loss(feats[:n_support], feats[n_support:], self.query_labels, e.n_way, e.n_shot,
                                     e.logit_scale)
        return loss, correct, len(self.query_labels)

    def validate(self, model: nn.Module) -> float | None:
        return episodic_validation(model.backbone, self, self.val_sampler)


def validation_sampler(val_labels: np.ndarray, episodes: EpisodeConfig, seed: int) -> EpisodeSampler | None:
    """Fixed, seeded validation episodes over ``val_labels`` (None when there is nothing to validate on)."""
    if len(val_labels) == 0:
        return None
    e = episodes
    return EpisodeSampler(val_labels, e.val_way, e.val_shot, e.val_query, e.val_episodes,
                          seed=derive_seed(seed, "validation episodes"), small_classes="exclude")


def episodic_validation(backbone: nn.Module, objective: Objective, sampler: EpisodeSampler | None) -> float | None:
    """Mean nearest-prototype accuracy of ``sampler``'s episodes on ``backbone``'s features of the
    objective's validation images (its ``store``, ``val_indices``, ``config`` and ``device``)."""
    if sampler is None:
        return None
    cfg = objective.config
    feats = extract_features(backbone, objective.store, objective.val_indices, batch_size=cfg.eval_batch_size,
                             amp=cfg.amp, cpu_amp=cfg.cpu_amp, progress=False)
    return episodic_eval(feats, sampler.labels, sampler, device=objective.device, progress=False).mean


class SupervisedEpisodicValidation(SupervisedObjective):
    """Supervised cross-entropy training whose epochs are chosen by episodic accuracy on *held-out
    classes* (Chen et al. 2019's "Baseline" with a validation split of classes, not of images).

    ``labels[train_indices]`` are 0..n_classes-1; ``labels[val_indices]`` may be any ints (other classes).
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, train_indices: Sequence[int],
                 val_indices: Sequence[int], episodes: EpisodeConfig, config: TrainConfig, *, n_classes: int) -> None:
        super().__init__(images, labels, train_indices, config, val_indices=val_indices, n_classes=n_classes)
        self.val_sampler = validation_sampler(np.asarray(labels)[self.val_indices], episodes, config.seed)

    def validate(self, model: nn.Module) -> float | None:
        return episodic_validation(model.backbone, self, self.val_sampler)
