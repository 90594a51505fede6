"""What every benchmark phase needs: the config, the images, the output folder and the phase store."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.config import BenchmarkConfig
from benchmarks.engine.phases import PhaseStore, phase_key
from fewshot.data.validation import ValidationRule, validation_split
from fewshot.images.features import cached_features


@dataclass(frozen=True)
class RunContext:
    cfg: BenchmarkConfig
    out: Path
    images: np.ndarray  # uint8 [N, H, W, 3], the image cache
    labels: np.ndarray  # int64 [N], the dataset's article-type index of every image
    image_key: str  # sha256 of the decoded pixels: names the dataset in phase and feature keys
    phases: PhaseStore
    progress: bool
    device: torch.device
    names: tuple[str, ...] = ()  # the product name of every image ("" when empty): the text branch's input
    # The validation rule that applies (config's, or its stratified fallback) and, for a group rule, every
    # image's group (its group_key values merged with its pixel copies): every choice made on validation
    # holds out whole groups (:meth:`validation_split`, :meth:`groups_of`).
    validation: ValidationRule = ValidationRule()
    val_groups: np.ndarray | None = None
    # Another seed of the run (``cfg.seeds``): its tag ("seed1"), the main context, and the embeddings it
    # trains anew (the others are the main seed's); what it trains goes under ``out`` = the run folder / tag.
    seed_tag: str = ""
    base: RunContext | None = None
    retrained: frozenset[str] = frozenset()

    @property
    def main(self) -> RunContext:
        """The main seed's context (this one, for the main seed)."""
        return self.base or self

    def for_seed(self, seed: int, retrained: frozenset[str]) -> RunContext:
        """The context of another seed: ``cfg.seed = seed``, phases named ``<phase>@seed<seed>``, the
        embeddings ``retrained`` trained again under ``out/seed<seed>/``, every other one the main seed's."""
        main = self.main
        tag = f"seed{seed}"
        return dataclasses.replace(main, cfg=dataclasses.replace(main.cfg, seed=seed), out=main.out / tag,
                                   seed_tag=tag, base=main, retrained=retrained)

    def owns(self, embedding: str) -> bool:
        """Whether this context trains ``embedding`` itself (else it is the main seed's)."""
        return self.base is None or embedding in self.retrained

    def phase_name(self, name: str) -> str:
        """A phase of this seed: ``name``, or ``name@seed<n>`` for another seed."""
        return f"{name}@{self.seed_tag}" if self.seed_tag else name

    def groups_of(self, rows: np.ndarray) -> np.ndarray | None:
        """The validation groups [len(rows)] of dataset rows, for ``fit(..., groups=)``; None: stratified."""
        return None if self.val_groups is None else self.val_groups[np.asarray(rows, dtype=np.int64)]

    def trainer_split(self, fraction: float, seed: int,
                      min_per_class: int = 1) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
        """A trainer's ``val_split`` (train indices -> (train, val)) by the group rule; None for a stratified
        rule, whose trainers carve their own split (the same draw as ever)."""
        if self.val_groups is None:
            return None
        return lambda indices: self.validation_split(indices, fraction, seed, min_per_class)

    def validation_split(self, indices: np.ndarray, fraction: float, seed: int,
                         min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(train, val) dataset indices of ``indices`` by the run's validation rule (stratified: exactly
        :func:`fewshot.data.split.stratified_split`)."""
        return validation_split(self.labels, fraction, seed, groups=self.val_groups, indices=indices,
                                min_per_class=min_per_class)

    def phase_key(self, name: str, inputs: Mapping[str, Any], upstream: Sequence[str] = (), code: str = "") -> str:
        """A phase's key: its inputs and code plus what every phase depends on, the pixels. Not the device: a
        phase computed on a GPU is the same experiment as on the CPU (to float tolerance), and may be reused."""
        return phase_key(name, {**inputs, "pixels_sha256": self.image_key}, upstream, code)

    def features(self, checkpoint: str | Path, rows: np.ndarray, backbone: str | None = None) -> torch.Tensor:
        """Embeddings [len(rows), D] of ``images[rows]`` by ``backbone`` (default: the config's) with the
        weights in ``checkpoint`` (a path, or "imagenet": then every image is embedded once, and sliced).
        Cached in the shared feature cache
        ($FEWSHOT_CACHE/features, keyed by the weights' bytes, the pixels, the rows and the precision), not
        in the run folder: runs that reuse a phase share its features, and ``fewshot cache --prune`` frees
        them."""
        cfg = self.cfg
        # Frozen ImageNet weights embed every image once: both protocols, the meta-learners and their
        # validation rows read slices of one cache entry instead of re-embedding the images they share.
        shared = str(checkpoint) == "imagenet"
        feats = cached_features(checkpoint, backbone or cfg.backbone, self.images, self.image_key,
                                None if shared else rows, device=cfg.device, cpu_amp=cfg.cpu_amp,
                                batch_size=cfg.evaluation.batch_size, progress=self.progress)
        return feats[torch.as_tensor(np.asarray(rows, dtype=np.int64))] if shared else feats
