"""What every benchmark phase needs: the config, the images, the output folder and the phase store."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.config import BenchmarkConfig
from benchmarks.engine.phases import PhaseStore, phase_key
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
