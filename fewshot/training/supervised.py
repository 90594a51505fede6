"""Supervised training: a backbone plus a linear head, cross-entropy with optional class weights and
class-balanced sampling, batches drawn from the uint8 image cache and augmented as tensor ops."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data.split import stratified_split
from fewshot.evaluation.functional import top1_accuracy
from fewshot.images.augment import augment_uniforms
from fewshot.images.inference import predict_scores
from fewshot.images.store import ImageStore
from fewshot.training.loop import Objective, TrainConfig
from fewshot.training.losses import (
    balanced_sample_weights,
    class_counts,
    class_weights,
    log_prior,
    logit_adjusted_cross_entropy,
)
from fewshot.utils.distributed import shard
from fewshot.utils.errors import UserError


class SupervisedObjective(Objective):
    """Cross-entropy on ``labels[train_indices]`` (labels 0..n_classes-1) of ``images`` [N, H, W, 3] uint8;
    with ``config.loss="logit_adjusted"`` the logit-adjusted loss, its prior the class frequencies of the
    training labels (validation scores the plain logits).

    ``val_indices``: None carves a stratified ``config.val_fraction`` split out of ``train_indices``
    (seeded with ``config.seed``); pass an empty array for no validation. An epoch is
    ``len(train) // batch_size`` full batches of a fresh permutation (the remainder is dropped, so
    BatchNorm never sees a batch of one), or, with ``balanced_sampling``, as many batches drawn with
    replacement with every class equally likely.

    Under torchrun (:meth:`distribute`) a rank augments and scores images ``i mod world`` of every batch,
    with the augmentation's random numbers drawn for the whole batch; its loss is its images' share of the
    batch's (class-weighted) mean."""

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, train_indices: Sequence[int],
                 config: TrainConfig, *, val_indices: Sequence[int] | None = None,
                 n_classes: int | None = None) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        train = np.asarray(train_indices, dtype=np.int64)
        if val_indices is None:
            train, val = stratified_split(labels, config.val_fraction, config.seed, indices=train,
                                          min_per_class=config.val_min_per_class)
        else:
            val = np.asarray(val_indices, dtype=np.int64)
        if train.size == 0:
            raise ValueError("SupervisedObjective got no training images")
        overlap = np.intersect1d(train, val)
        if overlap.size:
            raise ValueError(f"images {overlap[:5].tolist()} are in both train and val; give disjoint indices")
        self.n_classes = int(labels[train].max()) + 1 if n_classes is None else n_classes
        self.config, self.train_indices, self.val_indices = config, train, val
        self.train_labels = torch.from_numpy(labels[train])
        self.val_labels = torch.from_numpy(labels[val])
        self.class_weight = class_weights(self.train_labels, self.n_classes, config.class_weights,
                                          config.effective_beta)
        self.sample_weight = balanced_sample_weights(self.train_labels, self.n_classes) \
            if config.balanced_sampling else None
        self.log_prior = log_prior(class_counts(self.train_labels, self.n_classes), torch.float32) \
            if config.loss == "logit_adjusted" else None
        self._images: np.ndarray | None = images
        self.store: ImageStore | None = None

    def setup(self, device: torch.device, memory_format: torch.memory_format) -> None:
        if self.store is None:
            self.store = ImageStore(self._images, np.concatenate([self.train_indices, self.val_indices]), device)
            self._images = None  # the memmap is no longer needed; the store holds what the run uses
        self.store.to(device)
        self.device, self.memory_format = device, memory_format
        self.train_rows = self.store.rows(self.train_indices)
        self.labels_on_device = self.train_labels.to(device)
        if self.class_weight is not None:
            self.class_weight = self.class_weight.to(device)
        if self.log_prior is not None:
            self.log_prior = self.log_prior.to(device)

    def distribute(self, rank: int, world: int) -> None:
        size = min(self.config.batch_size, len(self.train_indices))
        if size < world:
            raise UserError(f"batches of {size} images cannot be shared by {world} processes (every one needs an "
                            "image); raise train.batch_size or start fewer processes")
        self.rank, self.world = rank, world

    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_indices) // self.config.batch_size)

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.train_indices)
        size = min(self.config.batch_size, n)
        steps = self.steps_per_epoch()
        if self.sample_weight is not None:
            order = torch.multinomial(self.sample_weight, steps * size, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        for step in range(steps):
            pos = order[step * size:(step + 1) * size]
            if self.world > 1:
                yield self._shard(pos, generator)
                continue
            x = self.store.load(self.train_rows[pos], self.config.augment, generator, self.memory_format)
            yield x, self.labels_on_device[pos.to(self.device)]

    def _shard(self, pos: torch.Tensor,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's part of the global batch at train positions ``pos`` [B]: (images [b, 3, H, W],
        labels [b], the share of the batch's loss normaliser they hold, a 0-d tensor)."""
        augment = self.config.augment
        uniforms = augment_uniforms(len(pos), generator) if augment.enabled else None  # as one process draws
        mine = shard(torch.arange(len(pos)), of=self.world, at=self.rank)
        x = self.store.load(self.train_rows[pos[mine]], augment, generator, self.memory_format,
                            uniforms=None if uniforms is None else uniforms[mine])
        labels = self.labels_on_device[pos.to(self.device)]
        # A class-weighted mean divides by the batch's weight sum (torch's weighted cross-entropy, also with
        # label smoothing): the shard holds its weights' part of it, not len(shard) / B.
        # In float64 (rounded once to the loss's dtype in :meth:`loss`), so that the ranks' shares sum to 1 to
        # the rounding of the training precision, float64 training included.
        weight = self.class_weight[labels].double() if self.class_weight is not None \
            else torch.ones(len(pos), dtype=torch.float64, device=self.device)
        mine = mine.to(self.device)
        return x, labels[mine], weight[mine].sum() / weight.sum()

    def loss(self, model: nn.Module,
             batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y = batch[:2]
        logits = model(x)
        # The loss in float32 at least: half-precision logits (autocast) are upcast, a float64 model's kept.
        z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        weight = None if self.class_weight is None else self.class_weight.to(z.dtype)
        if self.log_prior is None:
            loss = F.cross_entropy(z, y, weight=weight, label_smoothing=self.config.label_smoothing)
        else:  # the prior shifts only the loss's logits: predictions and validation stay prior-free
            loss = logit_adjusted_cross_entropy(z, y, self.log_prior, self.config.loss_tau,
                                                weight=weight, label_smoothing=self.config.label_smoothing)
        if len(batch) == 3:  # a rank's shard (distribute): its share of the global batch's mean loss
            loss = loss * batch[2].to(loss.dtype)
        return loss, (logits.argmax(1) == y).sum(), len(y)

    def validate(self, model: nn.Module) -> float | None:
        if len(self.val_indices) == 0:
            return None
        scores = predict_scores(model, self.store, self.val_indices, self.config.eval_batch_size,
                                amp=self.config.amp, cpu_amp=self.config.cpu_amp, progress=False)
        return top1_accuracy(scores, self.val_labels, self.config.val_metric)

