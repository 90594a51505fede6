"""RunContext.features: frozen ImageNet features are embedded once for every image and sliced."""
from __future__ import annotations

import json

import numpy as np
import torch

from benchmarks.config import BenchmarkConfig
from benchmarks.engine.context import RunContext
from benchmarks.engine.phases import PhaseStore
from fewshot.config import load_config
from tests.test_benchmark_run import SMOKE


def test_imagenet_features_are_one_cache_entry_for_every_image_sliced_by_the_rows_asked(tmp_path, monkeypatch,
                                                                                         one_torch_thread):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEWSHOT_CACHE", str(cache))
    cfg = load_config(BenchmarkConfig, SMOKE, ["device=cpu"])
    images = np.random.default_rng(0).integers(0, 256, size=(12, 32, 24, 3), dtype=np.uint8)
    ctx = RunContext(cfg, tmp_path, images, np.zeros(12, dtype=np.int64), "pixels-0", PhaseStore(tmp_path, log=print),
                     False, torch.device("cpu"))
    some = ctx.features("imagenet", np.array([7, 2, 9]), cfg.reference_backbone)
    every = ctx.features("imagenet", np.arange(12), cfg.reference_backbone)
    metas = [json.loads(p.read_text()) for p in (cache / "features").glob("*.json")]
    assert [m["n"] for m in metas] == [12]  # one entry, every image, whatever rows were asked first
    assert torch.equal(some, every[[7, 2, 9]])
