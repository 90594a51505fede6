"""The transfer protocol's phases: two-stage baseline, ProtoNets, nearest-centroid heads, K-shot study.

Every method is scored on the same test images of the same label spaces (20 head classes, the tail
classes) and goes through the one evaluator, :func:`fewshot.evaluation.per_class_topk`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from baselines.two_stage import train_two_stage
from benchmarks.context import RunContext
from fewshot.data.protocols import TransferProtocol
from fewshot.data.split import stratified_split
from fewshot.evaluation import TopKResult, per_class_topk
from fewshot.methods import ProtoNet
from fewshot.models.backbones import create_backbone
from fewshot.training.episodic import EpisodicObjective
from fewshot.training.loop import fit

PROTOTYPE_METHODS = ("centroid_stage1", "centroid_stage2", "protonet", "protonet_all")
PARTS = ("head_train", "head_test", "tail_train", "tail_test")


def train_protonet(ctx: RunContext, train_idx: np.ndarray, val_idx: np.ndarray, init: str | Path | None,
                   out_dir: Path, meta: dict) -> str:
    """Episodic training of a ProtoNet on ``train_idx`` (validated on episodes of ``val_idx``); returns
    the path of its best checkpoint. ``init``: a supervised checkpoint to start from, or None."""
    cfg = ctx.cfg
    tcfg = cfg.train("protonet")
    weights = init if cfg.protonet.init == "supervised" and init is not None else cfg.weights
    model = ProtoNet(create_backbone(cfg.backbone, weights, seed=cfg.seed))
    objective = EpisodicObjective(ctx.images, ctx.labels, train_idx, val_idx, cfg.protonet.episodes, tcfg)
    fit(model, objective, tcfg, out_dir, resume=True, progress=ctx.progress,
        meta={"backbone": cfg.backbone, "method": "protonet", **meta})
    return str(out_dir / "best.pt")


def run_transfer(ctx: RunContext, protocol: TransferProtocol) -> dict:
    """{"head": {method: TopKResult}, "tail": {method: TopKResult}, "shots": {method: {K: stats}}}."""
    cfg = ctx.cfg
    results: dict = {"head": {}, "tail": {}, "shots": {}}
    stage1, stage2 = ctx.phases.run("two_stage", lambda: train_two_stage(
        ctx.images, protocol, cfg.two_stage(), ctx.out / "two_stage", resume=True, progress=ctx.progress))
    if ctx.wants("two_stage"):
        results["head"]["two_stage"] = per_class_topk(stage1.scores, stage1.targets, class_names=protocol.head)
        results["tail"]["two_stage"] = per_class_topk(stage2.scores, stage2.targets, class_names=protocol.tail)

    checkpoints = {"centroid_stage1": str(stage1.checkpoint), "centroid_stage2": str(stage2.checkpoint)}
    seed = cfg.seed
    vf = cfg.protonet.train.val_fraction
    if ctx.wants("protonet"):
        train, val = stratified_split(ctx.labels, vf, seed, indices=protocol.head_train)
        checkpoints["protonet"] = ctx.phases.run("protonet_train", lambda: train_protonet(
            ctx, train, val, stage1.checkpoint, ctx.out / "protonet", {"classes": "head"}))
    if ctx.wants("protonet_all"):
        pool = np.sort(np.concatenate([protocol.head_train, protocol.tail_train]))
        train, val = stratified_split(ctx.labels, vf, seed, indices=pool, min_per_class=0)
        checkpoints["protonet_all"] = ctx.phases.run("protonet_all_train", lambda: train_protonet(
            ctx, train, val, stage1.checkpoint, ctx.out / "protonet_all", {"classes": "head+tail"}))

    for method in PROTOTYPE_METHODS:
        if ctx.wants(method):
            head, tail, shots = ctx.phases.run(f"eval_{method}", lambda: evaluate_prototypes(
                ctx, method, protocol, checkpoints[method]))
            results["head"][method], results["tail"][method], results["shots"][method] = head, tail, shots
    return results


def evaluate_prototypes(ctx: RunContext, method: str, protocol: TransferProtocol,
                        checkpoint: str) -> tuple[TopKResult, TopKResult, dict]:
    """Embed the head and tail images with ``checkpoint``'s backbone; per-class top-k on the head and tail
    test images with prototypes from all train images; then the K-shot study."""
    rows = np.concatenate([getattr(protocol, p) for p in PARTS])
    bounds = np.cumsum([0] + [len(getattr(protocol, p)) for p in PARTS])
    embedded = ctx.features(checkpoint, rows)
    feats = {p: embedded[bounds[i]:bounds[i + 1]] for i, p in enumerate(PARTS)}
    base_mean = feats["head_train"].mean(0)  # the base (head) classes' mean feature, for CL2N
    out = []
    for group in ("head", "tail"):
        y_train = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_train"), group))
        y_test = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_test"), group))
        clf = ctx.classifier(method, base_mean).fit(feats[f"{group}_train"], y_train)
        names = protocol.head if group == "head" else protocol.tail
        out.append(per_class_topk(clf.scores(feats[f"{group}_test"]), y_test, class_names=names))
    shots = kshot_study(ctx, method, protocol, feats, base_mean, out[1])
    return out[0], out[1], shots


def kshot_study(ctx: RunContext, method: str, protocol: TransferProtocol, feats: dict[str, torch.Tensor],
                base_mean: torch.Tensor, all_shots: TopKResult) -> dict[str, dict[str, float]]:
    """Tail macro/micro top-1 with prototypes from K train images per class (capped at what a class has),
    over ``kshot_draws`` seeded draws: {"1": {"macro_top1", "macro_top1_std", "micro_top1", ...}, ...,
    "all": ...}."""
    ev = ctx.cfg.evaluation
    y_train = protocol.targets(protocol.tail_train, "tail")
    y_test = torch.from_numpy(protocol.targets(protocol.tail_test, "tail"))
    members = [np.flatnonzero(y_train == c) for c in range(len(protocol.tail))]
    out: dict[str, dict[str, float]] = {}
    for k in ev.kshot:
        macro, micro = [], []
        for draw in range(ev.kshot_draws):
            rng = np.random.default_rng([ctx.cfg.seed, k, draw])
            pick = np.sort(np.concatenate([rng.choice(m, min(k, len(m)), replace=False) for m in members]))
            clf = ctx.classifier(method, base_mean).fit(feats["tail_train"][pick], torch.from_numpy(y_train[pick]))
            result = per_class_topk(clf.scores(feats["tail_test"]), y_test, ks=(1,), class_names=protocol.tail)
            macro.append(result.macro["top1"])
            micro.append(result.micro["top1"])
        out[str(k)] = {"macro_top1": float(np.mean(macro)), "macro_top1_std": float(np.std(macro)),
                       "micro_top1": float(np.mean(micro)), "micro_top1_std": float(np.std(micro)),
                       "draws": ev.kshot_draws}
    out["all"] = {"macro_top1": all_shots.macro["top1"], "macro_top1_std": 0.0,
                  "micro_top1": all_shots.micro["top1"], "micro_top1_std": 0.0, "draws": 1}
    return out
