"""The episodic protocol's evaluation: background-trained embeddings scored on evaluation-class episodes.

Every method runs on the same fixed seeded episodes of every way x shot setting. A method that declares the
prototype path (``episodic_path="prototypes"``: ProtoNet, SimpleShot, Chen et al.'s Baseline) goes through
the fast batched evaluator, :func:`fewshot.evaluation.episodic_eval`, with its classifier's
``prototype_settings()``; any other through the generic one, which fits and scores it episode by episode.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmarks.engine.codekey import code_digest
from benchmarks.engine.context import RunContext
from benchmarks.engine.episodic_split import EpisodicSplit
from benchmarks.registry.embeddings import (
    Embedding,
    checkpoint_of,
    embedding_phase,
    get_embedding,
    retrained_per_seed,
    train_embeddings,
    weights_of,
)
from benchmarks.registry.methods import BenchmarkMethod, configured_methods, in_report_order, method_code
from fewshot.config import to_dict
from fewshot.data.protocols import EpisodicProtocol
from fewshot.evaluation import episodic_class_accuracy, episodic_eval, evaluate_episodes
from fewshot.sampling import EpisodeSampler
from fewshot.utils.seeding import derive_seed

CLASS_TABLE_SETTING = (5, 5)  # the episodes whose per-class query accuracy goes into per_class.csv


def run_episodic(ctx: RunContext, protocol: EpisodicProtocol) -> dict:
    """{"episodic": {method: {"5w1s": {"mean", "ci95", "n_episodes"}, ...}}, "class_accuracy": {method:
    {class name: query accuracy in 5-way 5-shot episodes}}, "split": {...}, "seeds": {method: {seed: {setting:
    mean}}}}: the main seed's figures, and every seed's means of the methods whose embedding is trained again
    per seed (``cfg.seeds``; the meta-learners, or every method with ``cfg.seed_backbones``)."""
    split = EpisodicSplit.make(ctx.cfg, protocol)
    methods = in_report_order(configured_methods(ctx.cfg, "episodic"), "episodic")
    out = {**_run_seed(ctx, split, methods), "seeds": {},
           "split": {"train_classes": list(split.train_classes), "val_classes": list(split.val_classes)}}
    seeds = ctx.cfg.all_seeds()
    retrained = retrained_per_seed(ctx.cfg)
    repeated = [m for m in methods if m.episodic in retrained]
    if len(seeds) > 1 and repeated:
        per_seed = {seeds[0]: out} | {s: _run_seed(ctx.for_seed(s, retrained), split, repeated) for s in seeds[1:]}
        out["seeds"] = {m.name: {str(s): {k: v["mean"] for k, v in r["episodic"][m.name].items()}
                                 for s, r in per_seed.items()} for m in repeated}
    return out


def _run_seed(ctx: RunContext, split: EpisodicSplit, methods: list[BenchmarkMethod]) -> dict:
    train_embeddings(ctx, "episodic", split, [m.episodic for m in methods])
    out: dict = {"episodic": {}, "class_accuracy": {}}
    for method in methods:
        emb = get_embedding(method.episodic)
        inputs = {"method": method.name, "evaluation": to_dict(ctx.cfg.evaluation), "seed": ctx.cfg.seed,
                  "cpu_amp": ctx.cfg.cpu_amp, "min_images": ctx.cfg.data.min_images,
                  "val_classes": ctx.cfg.val_classes, "dedupe": ctx.cfg.data.dedupe,
                  **{name: to_dict(getattr(ctx.cfg, name)) for name in method.settings}}
        name = f"eval_episodic_{method.name}"
        key = ctx.phase_key(name, inputs, [ctx.phases.keys[embedding_phase(ctx, emb)]],
                            f"{method_code(method)}/{code_digest(evaluate_method)}")
        out["episodic"][method.name], out["class_accuracy"][method.name] = ctx.phases.run(
            ctx.phase_name(name), key, lambda: evaluate_method(ctx, method, *scoring_inputs(ctx, emb), split))
    return out


def scoring_inputs(ctx: RunContext, emb: Embedding) -> tuple[str, str, dict[str, Any]]:
    """(weights, backbone, classifier keyword arguments) that score embedding ``emb`` in ``ctx``: an embedding
    scored on another's features (a meta-learner on frozen ImageNet features) brings the model its method's
    classifier takes (``model=``, loaded once here)."""
    if emb.features_from is None:
        return weights_of(ctx, emb), emb.backbone(ctx.cfg), {}
    source = get_embedding(emb.features_from)
    model = emb.load_model(ctx.cfg, checkpoint_of(ctx, emb)) if emb.load_model is not None else None
    return weights_of(ctx, source), source.backbone(ctx.cfg), {} if model is None else {"model": model}


def evaluate_method(ctx: RunContext, method: BenchmarkMethod, checkpoint: str, backbone: str,
                    extra: dict[str, Any], split: EpisodicSplit) -> tuple[dict, dict]:
    """Embed the background training images (for CL2N's base mean) and the evaluation images with
    ``checkpoint``'s backbone, then every way x shot setting on the same seeded episodes. ``extra``: keyword
    arguments of the method's classifier factory (a meta-learner's model)."""
    protocol = split.protocol
    eval_idx = protocol.evaluation_idx
    embedded = ctx.features(checkpoint, np.concatenate([split.train_idx, eval_idx]), backbone)
    base_mean, feats = embedded[: len(split.train_idx)].mean(0), embedded[len(split.train_idx):]
    labels = ctx.labels[eval_idx]
    ev = ctx.cfg.evaluation
    name_of = dict(zip(labels.tolist(), protocol.articles[eval_idx]))
    settings: dict[str, dict] = {}
    class_accuracy: dict[str, float] = {}
    for way in ev.ways:
        for shot in ev.shots:
            sampler = EpisodeSampler(labels, way, shot, ev.n_query, ev.episodes,
                                     seed=derive_seed(ctx.cfg.seed, f"evaluation episodes {way}w{shot}s"))
            summary, per_label = _score_setting(ctx, method, feats, labels, base_mean, sampler,
                                                want_classes=(way, shot) == CLASS_TABLE_SETTING, extra=extra)
            settings[f"{way}w{shot}s"] = summary
            if per_label is not None:
                class_accuracy = {name_of[c]: acc for c, acc in per_label.items()}
    return settings, class_accuracy


def _score_setting(ctx: RunContext, method: BenchmarkMethod, feats: torch.Tensor, labels: np.ndarray,
                   base_mean: torch.Tensor, sampler: EpisodeSampler, want_classes: bool,
                   extra: dict[str, Any]) -> tuple[dict, dict[int, float] | None]:
    """(summary of one way x shot setting, per-label query accuracy or None)."""
    if method.episodic_path == "prototypes":
        kwargs = method.classifier(ctx.cfg, base_mean, **extra).prototype_settings()
        result = episodic_eval(feats, labels, sampler, device=ctx.cfg.device, progress=False, **kwargs)
        per_label = episodic_class_accuracy(feats, labels, sampler, **kwargs) if want_classes else None
        return result.summary(), per_label
    # The generic path fits a fresh classifier on every episode's support set.
    result = evaluate_episodes(lambda: method.classifier(ctx.cfg, base_mean, **extra), feats, labels, sampler,
                               device=ctx.cfg.device, progress=False)
    return result.summary(), result.class_accuracy if want_classes else None
