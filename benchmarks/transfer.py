"""The transfer protocol's evaluation: every registered method on the same head and tail test images.

Feature-based methods fit their head on an embedding's train features (all of them, then K per class
for the K-shot study) and score the test features; scorer methods (the two-stage baseline) bring their
own scores. Everything goes through the one evaluator, :func:`fewshot.evaluation.per_class_topk`.
"""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.context import RunContext
from benchmarks.embeddings import get_embedding, in_report_order, train_embeddings
from benchmarks.methods import BenchmarkMethod
from fewshot.config import to_dict
from fewshot.data.protocols import TransferProtocol
from fewshot.evaluation import TopKResult, per_class_topk

PARTS = ("head_train", "head_test", "tail_train", "tail_test")


def run_transfer(ctx: RunContext, protocol: TransferProtocol) -> dict:
    """{"head": {method: TopKResult}, "tail": {method: TopKResult}, "shots": {method: {K: stats}}}, each in
    the protocol's method order (embeddings' training order, then the registry's)."""
    methods = ctx.methods("transfer")
    wanted = [e for m in methods for e in (m.transfer, *m.needs)]
    trained = train_embeddings(ctx, "transfer", protocol, wanted)
    results: dict = {"head": {}, "tail": {}, "shots": {}, "shots_kind": {}}
    for method in in_report_order(methods, "transfer"):
        if method.scorer is not None:
            scored = method.scorer(ctx, protocol, trained)
            results["head"][method.name], results["tail"][method.name] = scored["head"], scored["tail"]
            continue
        emb = get_embedding(method.transfer)
        key = ctx.phase_key(f"eval_{method.name}", _eval_inputs(ctx, method), [ctx.phases.keys[emb.phase]])
        head, tail, shots = ctx.phases.run(f"eval_{method.name}", key, lambda: evaluate_features(
            ctx, method, protocol, emb.weights(ctx.out), emb.backbone(ctx.cfg)))
        results["head"][method.name], results["tail"][method.name] = head, tail
        results["shots"][method.name] = shots
        results["shots_kind"][method.name] = "prototype subsampling" if emb.sees_tail else "few-shot"
    return results


def _eval_inputs(ctx: RunContext, method: BenchmarkMethod) -> dict:
    cfg = ctx.cfg
    return {"method": method.name, "evaluation": to_dict(cfg.evaluation), "seed": cfg.seed,
            "cpu_amp": cfg.cpu_amp, **{k: to_dict(cfg.data)[k] for k in ("n_head", "min_train")}}


def evaluate_features(ctx: RunContext, method: BenchmarkMethod, protocol: TransferProtocol,
                      checkpoint: str, backbone: str) -> tuple[TopKResult, TopKResult, dict]:
    """Embed the head and tail images with ``checkpoint``'s backbone; per-class top-k on the head and tail
    test images with the method fitted on all train images; then the K-shot study."""
    rows = np.concatenate([getattr(protocol, p) for p in PARTS])
    bounds = np.cumsum([0] + [len(getattr(protocol, p)) for p in PARTS])
    embedded = ctx.features(checkpoint, rows, backbone)
    feats = {p: embedded[bounds[i]:bounds[i + 1]] for i, p in enumerate(PARTS)}
    base_mean = feats["head_train"].mean(0)  # the base (head) classes' mean feature, for CL2N
    out = []
    for group in ("head", "tail"):
        y_train = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_train"), group))
        y_test = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_test"), group))
        clf = method.head(ctx.cfg, base_mean).fit(feats[f"{group}_train"], y_train)
        names = protocol.head if group == "head" else protocol.tail
        out.append(per_class_topk(clf.scores(feats[f"{group}_test"]), y_test, class_names=names))
    shots = kshot_study(ctx, method, protocol, feats, base_mean, out[1])
    return out[0], out[1], shots


def kshot_study(ctx: RunContext, method: BenchmarkMethod, protocol: TransferProtocol,
                feats: dict[str, torch.Tensor], base_mean: torch.Tensor,
                all_shots: TopKResult) -> dict[str, dict[str, float]]:
    """Tail macro/micro top-1 with the method fitted on K train images per class (capped at what a class
    has), over ``kshot_draws`` seeded draws: {"1": {"macro_top1", "macro_top1_std", "micro_top1", ...},
    ..., "all": ...}."""
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
            clf = method.head(ctx.cfg, base_mean).fit(feats["tail_train"][pick], torch.from_numpy(y_train[pick]))
            result = per_class_topk(clf.scores(feats["tail_test"]), y_test, ks=(1,), class_names=protocol.tail)
            macro.append(result.macro["top1"])
            micro.append(result.micro["top1"])
        out[str(k)] = {"macro_top1": float(np.mean(macro)), "macro_top1_std": float(np.std(macro)),
                       "micro_top1": float(np.mean(micro)), "micro_top1_std": float(np.std(micro)),
                       "draws": ev.kshot_draws}
    out["all"] = {"macro_top1": all_shots.macro["top1"], "macro_top1_std": 0.0,
                  "micro_top1": all_shots.micro["top1"], "micro_top1_std": 0.0, "draws": 1}
    return out
