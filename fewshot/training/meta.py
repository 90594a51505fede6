"""Meta-training MAML / ANIL (:mod:`fewshot.methods.maml`, :mod:`fewshot.methods.anil`) on cached features
with the generic trainer :func:`fewshot.training.loop.fit` (checkpoints, resume, best epoch).

Each optimiser step is a meta-batch of ``meta_batch`` N-way K-shot tasks drawn by a seeded
:class:`fewshot.EpisodeSampler` from the training rows: per task the model adapts on the support and the
queries' cross-entropy (through the adaptation, second-order unless ``first_order``) is averaged over the
tasks for the outer step (Finn et al. 2017, Algorithm 2). Validation is the mean accuracy of fixed, seeded
episodes on held-out rows (e.g. other classes), each fitted and scored through the method interface by
:func:`fewshot.evaluation.evaluate_episodes`; it picks the best epoch.

    model = MAML(nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 64)), first_order=True)
    objective = MetaObjective(features, labels, train_idx, val_idx, MetaConfig(), train_config)
    fit(model, objective, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.0, ...), out_dir)
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fewshot.evaluation.generic import evaluate_episodes
from fewshot.sampling import EpisodeSampler
from fewshot.training.loop import Objective, TrainConfig
from fewshot.utils.errors import UserError
from fewshot.utils.seeding import derive_seed


@dataclass(frozen=True)
class MetaConfig:
    """Training tasks (``meta_batch`` per optimiser step, ``steps_per_epoch`` steps per epoch) and the
    validation episodes. ``TrainConfig.batch_size`` plays no part: a meta-batch of tasks is the batch."""

    n_way: int = 5
    n_shot: int = 1
    n_query: int = 15
    meta_batch: int = 4
    steps_per_epoch: int = 100
    val_way: int = 5
    val_shot: int = 1
    val_query: int = 15
    val_episodes: int = 200


class MetaObjective(Objective):
    """Meta-learning loss on tasks of ``labels[train_indices]``; validation on ``labels[val_indices]``.

    ``features``: [N, d] cached features (float), ``labels``: [N] ints aligned with them. The model must have
    ``query_loss(support, support_labels, query, query_labels) -> (loss, correct)`` and the
    :class:`~fewshot.methods.base.FewShotClassifier` interface (:class:`~fewshot.methods.maml.MAML`,
    :class:`~fewshot.methods.anil.ANIL`). Classes with fewer than ``n_shot + n_query`` training rows are
    left out of the tasks (``excluded``).

    Under torchrun (:meth:`distribute`) task ``i`` (the sampler's global episode counter) is meta-trained by
    rank ``i mod world``; a rank's loss is its tasks' share of the meta-batch's mean.
    """

    def __init__(self, features: torch.Tensor, labels: Sequence[int] | np.ndarray, train_indices: Sequence[int],
                 val_indices: Sequence[int], meta: MetaConfig, config: TrainConfig) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.features = torch.as_tensor(features).float()
        self.train_indices = np.asarray(train_indices, dtype=np.int64)
        self.val_indices = np.asarray(val_indices, dtype=np.int64)
        self.meta, self.config = meta, config
        m = meta
        self.sampler = EpisodeSampler(labels[self.train_indices], m.n_way, m.n_shot, m.n_query,
                                      m.steps_per_epoch * m.meta_batch, seed=derive_seed(config.seed, "meta tasks"),
                                      small_classes="exclude")
        self.val_sampler = None if len(self.val_indices) == 0 else EpisodeSampler(
            labels[self.val_indices], m.val_way, m.val_shot, m.val_query, m.val_episodes,
            seed=derive_seed(config.seed, "validation episodes"), small_classes="exclude")
        self.support_labels = torch.arange(m.n_way).repeat_interleave(m.n_shot)
        self.query_labels = torch.arange(m.n_way).repeat_interleave(m.n_query)

    @property
    def excluded(self) -> dict[int, int]:
        """Labels too small for a training task -> their number of training rows."""
        return self.sampler.excluded_classes

    def setup(self, device: torch.device, memory_format: torch.memory_format) -> None:
        self.device = device
        self.train_features = self.features[torch.from_numpy(self.train_indices)].to(device)
        self.val_features = self.features[torch.from_numpy(self.val_indices)].to(device)
        self.support_labels = self.support_labels.to(device)
        self.query_labels = self.query_labels.to(device)

    def distribute(self, rank: int, world: int) -> None:
        if self.meta.meta_batch < world:
            raise UserError(f"meta_batch={self.meta.meta_batch} tasks per step cannot be shared by {world} "
                            "processes (every one needs a task); raise meta_batch or start fewer processes")
        self.rank, self.world = rank, world

    def steps_per_epoch(self) -> int:
        return self.meta.steps_per_epoch

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        # The tasks of epoch e are global episodes e * n .. e * n + n - 1 of the sampler: a pure function of
        # (seed, epoch), so a resumed run meta-trains on exactly the tasks an uninterrupted one would.
        m, per_epoch = self.meta, self.meta.steps_per_epoch * self.meta.meta_batch
        batch = torch.from_numpy(self.sampler.sample_batch(epoch * per_epoch, per_epoch))  # [T, W, S + Q]
        for step, tasks in enumerate(batch.view(m.steps_per_epoch, m.meta_batch, m.n_way, m.n_shot + m.n_query)):
            if self.world > 1:  # episode i of the sampler on rank i mod world
                first = epoch * per_epoch + step * m.meta_batch
                tasks = tasks[[j for j in range(m.meta_batch) if (first + j) % self.world == self.rank]]
            yield self.train_features[tasks.to(self.device)]  # [meta_batch (this rank's tasks), W, S + Q, d]

    def loss(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        m, d = self.meta, batch.shape[-1]
        losses, correct = [], torch.zeros((), dtype=torch.int64, device=batch.device)
        for task in batch:  # [W, S + Q, d]
            support = task[:, : m.n_shot].reshape(-1, d)
            query = task[:, m.n_shot :].reshape(-1, d)
            loss, right = model.query_loss(support, self.support_labels, query, self.query_labels)
            losses.append(loss)
            correct += right
        loss = torch.stack(losses).mean()
        if self.world > 1:  # this rank's tasks: their share of the meta-batch's mean
            loss = loss * (len(batch) / m.meta_batch)
        return loss, correct, len(batch) * len(self.query_labels)

    def validate(self, model: nn.Module) -> float | None:
        if self.val_sampler is None:
            return None
        # A factory returning the model itself: its fit adapts a fresh clone and leaves it unchanged, so
        # no per-episode deep copy is needed.
        return evaluate_episodes(lambda: model, self.val_features, self.val_sampler.labels, self.val_sampler,
                                 progress=False).mean
