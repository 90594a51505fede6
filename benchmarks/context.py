"""What every benchmark phase needs: the config, the images, the output folder and the phase store."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.config import BenchmarkConfig
from benchmarks.phases import PhaseStore
from fewshot.images.features import cached_features
from fewshot.methods import FewShotClassifier, NearestCentroid, ProtoNet


@dataclass(frozen=True)
class RunContext:
    cfg: BenchmarkConfig
    out: Path
    images: np.ndarray  # uint8 [N, H, W, 3], the image cache
    labels: np.ndarray  # int64 [N], the dataset's article-type index of every image
    image_key: str
    phases: PhaseStore
    progress: bool

    def wants(self, *methods: str) -> bool:
        return any(m in self.cfg.methods for m in methods)

    def features(self, checkpoint: str | Path, rows: np.ndarray) -> torch.Tensor:
        """Embeddings [len(rows), D] of ``images[rows]`` by the backbone in ``checkpoint`` (cached in the run)."""
        cfg = self.cfg
        return cached_features(checkpoint, cfg.backbone, self.images, self.image_key, rows,
                               cache_root=self.out / "features", device=cfg.device, cpu_amp=cfg.cpu_amp,
                               batch_size=cfg.evaluation.batch_size, progress=self.progress)

    def classifier(self, method: str, base_mean: torch.Tensor) -> FewShotClassifier:
        """ProtoNets score as Snell et al. (squared Euclidean, raw features); every other nearest-centroid
        method uses the configured SimpleShot normalisation and distance."""
        if method.startswith("protonet"):
            return ProtoNet()
        ev = self.cfg.evaluation
        return NearestCentroid(normalize=ev.normalize, distance=ev.distance,
                               base_mean=base_mean if ev.normalize == "cl2n" else None)

    def normalization(self, method: str) -> tuple[str, str]:
        """(normalisation, distance) that :meth:`classifier` uses for ``method``."""
        if method.startswith("protonet"):
            return "none", "euclidean"
        return self.cfg.evaluation.normalize, self.cfg.evaluation.distance
