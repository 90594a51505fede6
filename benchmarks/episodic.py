"""The episodic protocol's phases: background-trained backbones evaluated on evaluation-class episodes.

The background classes are split (seeded) into training classes and held-out validation classes; every
choice of epoch is made on episodes of the validation classes, never on evaluation classes.
``baseline_centroid`` is a supervised classifier on the training classes used through nearest centroid
(Chen et al. 2019's "Baseline", here with SimpleShot's normalisation); ``protonet`` is a ProtoNet
trained episodically on the same classes.
"""
from __future__ import annotations

import numpy as np

from benchmarks.context import RunContext
from benchmarks.transfer import train_protonet
from fewshot.data.protocols import EpisodicProtocol
from fewshot.evaluation import episodic_class_accuracy, episodic_eval
from fewshot.models.backbones import create_backbone
from fewshot.models.classifier import Classifier
from fewshot.sampling import EpisodeSampler
from fewshot.training.episodic import SupervisedEpisodicValidation
from fewshot.training.loop import fit
from fewshot.utils.seeding import derive_seed

EPISODIC_METHODS = ("baseline_centroid", "protonet")
CLASS_TABLE_SETTING = (5, 5)  # the episodes whose per-class query accuracy goes into per_class.csv


def split_background(ctx: RunContext, protocol: EpisodicProtocol) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training classes, validation classes): a seeded ``val_classes`` fraction of the background
    classes is held out whole, at least enough for one validation episode's way."""
    names = protocol.background
    n_val = max(ctx.cfg.protonet.episodes.val_way, round(ctx.cfg.val_classes * len(names)))
    if n_val >= len(names):
        raise ValueError(f"only {len(names)} background classes; cannot hold out {n_val} for validation. Lower "
                         "val_classes or protonet.episodes.val_way")
    rng = np.random.default_rng(derive_seed(ctx.cfg.seed, "validation classes"))
    held = set(rng.choice(len(names), n_val, replace=False).tolist())
    return (tuple(c for i, c in enumerate(names) if i not in held), tuple(c for i, c in enumerate(names) if i in held))


def train_background_classifier(ctx: RunContext, train_idx: np.ndarray, val_idx: np.ndarray,
                                train_classes: tuple[str, ...], class_of: np.ndarray) -> str:
    cfg = ctx.cfg
    tcfg = cfg.train("background")
    labels = np.full(len(ctx.images), -1, dtype=np.int64)
    lookup = {c: i for i, c in enumerate(train_classes)}
    labels[train_idx] = [lookup[c] for c in class_of[train_idx]]
    labels[val_idx] = ctx.labels[val_idx] + len(train_classes)  # distinct from the training labels
    objective = SupervisedEpisodicValidation(ctx.images, labels, train_idx, val_idx, cfg.protonet.episodes, tcfg,
                                             n_classes=len(train_classes))
    model = Classifier(create_backbone(cfg.backbone, cfg.weights, seed=cfg.seed), len(train_classes), seed=cfg.seed)
    out_dir = ctx.out / "background"
    fit(model, objective, tcfg, out_dir, resume=True, progress=ctx.progress,
        meta={"backbone": cfg.backbone, "method": "baseline_centroid", "classes": list(train_classes)})
    return str(out_dir / "best.pt")


def run_episodic(ctx: RunContext, protocol: EpisodicProtocol) -> dict:
    """{"episodic": {method: {"5w1s": {"mean", "ci95", "n_episodes"}, ...}}, "class_accuracy": {method:
    {class name: query accuracy in 5-way 5-shot episodes}}, "split": {...}}."""
    cfg = ctx.cfg
    train_classes, val_classes = split_background(ctx, protocol)
    class_of = protocol.articles
    train_idx = np.flatnonzero(np.isin(class_of, train_classes))
    val_idx = np.flatnonzero(np.isin(class_of, val_classes))
    checkpoints: dict[str, str] = {}
    if ctx.wants(*EPISODIC_METHODS):
        checkpoints["baseline_centroid"] = ctx.phases.run("background_train", lambda: train_background_classifier(
            ctx, train_idx, val_idx, train_classes, class_of))
    if ctx.wants("protonet"):
        init = checkpoints["baseline_centroid"]
        checkpoints["protonet"] = ctx.phases.run("protonet_bg_train", lambda: train_protonet(
            ctx, train_idx, val_idx, init, ctx.out / "protonet_bg", {"classes": "background"}))
    out: dict = {"episodic": {}, "class_accuracy": {},
                 "split": {"train_classes": list(train_classes), "val_classes": list(val_classes)}}
    for method in EPISODIC_METHODS:
        if ctx.wants(method):
            out["episodic"][method], out["class_accuracy"][method] = ctx.phases.run(
                f"eval_episodic_{method}", lambda: evaluate_episodes(ctx, method, checkpoints[method], train_idx,
                                                                     protocol))
    return out


def evaluate_episodes(ctx: RunContext, method: str, checkpoint: str, train_idx: np.ndarray,
                      protocol: EpisodicProtocol) -> tuple[dict, dict]:
    """Embed the background training images (for CL2N's base mean) and the evaluation images with
    ``checkpoint``'s backbone, then every way x shot setting on the same seeded episodes for every method."""
    eval_idx = protocol.evaluation_idx
    embedded = ctx.features(checkpoint, np.concatenate([train_idx, eval_idx]))
    base_mean, feats = embedded[: len(train_idx)].mean(0), embedded[len(train_idx):]
    labels = ctx.labels[eval_idx]
    ev = ctx.cfg.evaluation
    normalize, distance = ctx.normalization(method)
    settings: dict[str, dict] = {}
    class_accuracy: dict[str, float] = {}
    for way in ev.ways:
        for shot in ev.shots:
            sampler = EpisodeSampler(labels, way, shot, ev.n_query, ev.episodes,
                                     seed=derive_seed(ctx.cfg.seed, f"evaluation episodes {way}w{shot}s"))
            result = episodic_eval(feats, labels, sampler, normalize=normalize, distance=distance,
                                   base_mean=base_mean if normalize == "cl2n" else None, device=ctx.cfg.device,
                                   progress=False)
            settings[f"{way}w{shot}s"] = result.summary()
            if (way, shot) == CLASS_TABLE_SETTING:
                name_of = dict(zip(labels.tolist(), protocol.articles[protocol.evaluation_idx]))
                per_label = episodic_class_accuracy(feats, labels, sampler, normalize=normalize, distance=distance,
                                                    base_mean=base_mean if normalize == "cl2n" else None)
                class_accuracy = {name_of[c]: acc for c, acc in per_label.items()}
    return settings, class_accuracy
