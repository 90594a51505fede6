"""The library end to end on real catalogue images: decode a few hundred of them through the image cache,
train a conv4 classifier for one epoch, embed, and score a nearest-centroid head with the common evaluator.

Only a small subset is decoded (``load_or_build`` with those ids, under the test's own temporary folder),
so the test neither builds the 44k-image cache nor writes outside its tmp_path.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fewshot.data.cache import load_or_build
from fewshot.data.dataset import FashionProducts
from fewshot.evaluation import per_class_topk
from fewshot.images.inference import extract_features
from fewshot.methods import NearestCentroid
from fewshot.models import Classifier, create_backbone
from fewshot.training.loop import TrainConfig, fit
from fewshot.training.supervised import SupervisedObjective

N_CLASSES, PER_CLASS, N_TRAIN = 5, 80, 60  # per class: 60 train (support) + 20 test (query) images
SIZE = (32, 24)

pytestmark = pytest.mark.realdata


def _subset(ds: FashionProducts) -> tuple[np.ndarray, list[str]]:
    """Dataset rows of the first ``PER_CLASS`` images (file order) of the ``N_CLASSES`` largest classes,
    grouped by class; and those classes' names."""
    counts = np.bincount(ds.labels, minlength=len(ds.classes))
    classes = np.argsort(-counts, kind="stable")[:N_CLASSES]
    rows = np.concatenate([np.flatnonzero(ds.labels == c)[:PER_CLASS] for c in classes])
    return rows, [ds.classes[c] for c in classes]


def test_real_images_train_embed_and_evaluate_above_chance(real_data, tmp_path):
    ds = FashionProducts(real_data, warn=False)
    rows, names = _subset(ds)
    cache = load_or_build(real_data, ds.ids[rows], size=SIZE, cache_root=tmp_path / "cache", progress=False)
    assert cache.built_now and cache.images.shape == (len(rows), *SIZE, 3) and not cache.bad
    images = np.asarray(cache.images)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)  # rows are grouped by class, in ``names`` order
    within = np.tile(np.arange(PER_CLASS), N_CLASSES)
    train, test = np.flatnonzero(within < N_TRAIN), np.flatnonzero(within >= N_TRAIN)

    # lr 0.01: one epoch of 10 steps without warm-up; 0.05 overshoots from scratch (loss ~5 vs ln 5 = 1.6).
    config = TrainConfig(epochs=1, batch_size=30, lr=0.01, warmup_epochs=0.0, device="cpu", seed=0)
    model = Classifier(create_backbone("conv4", seed=0), N_CLASSES, seed=0)
    objective = SupervisedObjective(images, labels, train, config, val_indices=np.array([], dtype=np.int64))
    result = fit(model, objective, config, progress=False)
    assert math.isfinite(result.history[0]["train_loss"])

    feats = extract_features(model.backbone, images, np.arange(len(images)), device="cpu", progress=False)
    assert feats.shape == (len(images), model.backbone.out_dim) and torch.isfinite(feats).all()
    head = NearestCentroid(normalize="l2n").fit(feats[train], torch.from_numpy(labels[train]))
    scores = head.scores(feats[test])
    assert torch.isfinite(scores).all()
    topk = per_class_topk(scores, torch.from_numpy(labels[test]), ks=(1, 2), class_names=names)
    assert topk.table["n"].tolist() == [PER_CLASS - N_TRAIN] * N_CLASSES
    chance = 1 / N_CLASSES  # this seed scores about 0.6; twice chance leaves room for platform noise
    assert topk.micro["top1"] >= 2 * chance, topk.table
    assert topk.macro["top1"] >= 2 * chance and topk.macro["top2"] >= topk.macro["top1"]
