"""The transfer protocol's evaluation: every configured method on the same head and tail test images.

Three groups: head, tail, and the joint group "all" (head + tail classes, one classifier over every
class). Feature-based methods fit their classifier on an embedding's train features of a group (all of them,
then K per class for the tail's K-shot study) and score the group's test features; scorer methods (the
two-stage baselines, the fusions) bring their own scores. Everything goes through the one evaluator,
:func:`fewshot.evaluation.per_class_topk`.
"""
from __future__ import annotations

import torch

from benchmarks.engine.codekey import code_digest
from benchmarks.engine.context import RunContext
from benchmarks.engine.names import subset_row, without_class_word
from benchmarks.registry.embeddings import (
    Embedding,
    embedding_phase,
    get_embedding,
    retrained_per_seed,
    train_embeddings,
    transfer_parts,
)
from benchmarks.registry.methods import (
    BenchmarkMethod,
    configured_methods,
    in_report_order,
    method_code,
    method_inputs,
)
from fewshot.data.protocols import TRANSFER_GROUPS, TransferProtocol
from fewshot.evaluation import TopKResult, per_class_topk
from fewshot.evaluation.kshot import kshot_curve
from fewshot.evaluation.predictions import prediction_record
from fewshot.methods.base import fit_validated


def run_transfer(ctx: RunContext, protocol: TransferProtocol) -> dict:
    """{"head" | "tail" | "all": {method: TopKResult}, "predictions": {method: {group: record}}, "shots":
    {method: {K: stats}}, "shots_kind": {method: str}, "choices": {method: {group: what the classifier chose on
    validation}}, "subsets": ..., "seeds": {group: {method: {seed: figures}}}}, each in the protocol's method
    order (embeddings' registration order, then the registry's). The figures and predictions are the main
    seed's; "seeds" holds every seed's figures of the methods run once per seed (``cfg.seeds``)."""
    methods = in_report_order(configured_methods(ctx.cfg, "transfer"), "transfer")
    results = _run_seed(ctx, protocol, methods)
    results["seeds"] = {}
    seeds = ctx.cfg.all_seeds()
    if len(seeds) > 1:
        repeated = [m for m in methods if m.seeded or ctx.cfg.seed_backbones]
        retrained = retrained_per_seed(ctx.cfg)
        per_seed = {seeds[0]: results} | {s: _run_seed(ctx.for_seed(s, retrained), protocol, repeated)
                                          for s in seeds[1:]}
        for group in TRANSFER_GROUPS:
            for m in repeated:
                if m.name in results[group]:
                    results["seeds"].setdefault(group, {})[m.name] = {
                        str(s): r[group][m.name].summary() for s, r in per_seed.items()}
    return results


def _run_seed(ctx: RunContext, protocol: TransferProtocol, methods: list[BenchmarkMethod]) -> dict:
    """Every method of ``methods`` with the context's seed (see :func:`run_transfer`)."""
    trained = train_embeddings(ctx, "transfer", protocol, [e for m in methods for e in m.groups().values()])
    results: dict = {"head": {}, "tail": {}, "all": {}, "shots": {}, "shots_kind": {}, "choices": {}, "subsets": {},
                     "predictions": {}}
    for method in methods:
        if method.scorer is not None:
            scored = method.scorer(ctx, protocol, trained)
        else:
            embeddings = {group: get_embedding(name) for group, name in method.groups().items()}
            scored = ctx.phases.run(ctx.phase_name(f"eval_{method.name}"), eval_key(ctx, method),
                                    lambda: evaluate_features(ctx, method, protocol, embeddings))
            if "shots" in scored:
                results["shots"][method.name] = scored["shots"]
                results["shots_kind"][method.name] = ("prototype subsampling" if embeddings["tail"].sees_tail
                                                      else "few-shot")
        for group in TRANSFER_GROUPS:
            if group in scored:
                results[group][method.name] = scored[group]
        for key in ("choices", "subsets", "predictions"):
            if any((scored.get(key) or {}).values()):
                results[key][method.name] = scored[key]
    return results


def eval_key(ctx: RunContext, method: BenchmarkMethod) -> str:
    """The key of a feature-based method's evaluation phase: its config slice, the keys of the embeddings it
    reads (trained first) and the code of its classifier and of this evaluation."""
    embeddings = dict.fromkeys(get_embedding(name) for name in method.groups().values())
    upstream = [ctx.phases.keys[embedding_phase(ctx, e)] for e in embeddings]
    return ctx.phase_key(f"eval_{method.name}", method_inputs(ctx.cfg, method), upstream,
                         f"{method_code(method)}/{code_digest(evaluate_features)}")


def evaluate_features(ctx: RunContext, method: BenchmarkMethod, protocol: TransferProtocol,
                      embeddings: dict[str, Embedding]) -> dict:
    """For each group, embed its images with that group's embedding, fit the method on every train image
    of the group and take per-class top-k on its test images; then the K-shot study on the tail.
    Returns {group: TopKResult, "choices": {group: dict}, "subsets": ..., "shots": ... (when ``method.kshot``)}."""
    out: dict = {"choices": {}, "subsets": {}, "predictions": {}}
    feats_of: dict[str, dict[str, torch.Tensor]] = {}
    for group, emb in embeddings.items():
        if emb.name not in feats_of:
            feats_of[emb.name] = transfer_parts(ctx, protocol, emb)
        feats = feats_of[emb.name]
        base_mean = feats["head_train"].mean(0)  # the base (head) classes' mean feature, for CL2N
        train_rows = getattr(protocol, f"{group}_train")
        y_train = torch.from_numpy(protocol.targets(train_rows, group))
        y_test = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_test"), group))
        clf = fit_validated(method.classifier(ctx.cfg, base_mean), feats[f"{group}_train"], y_train,
                            ctx.groups_of(train_rows))
        scores = clf.scores(feats[f"{group}_test"])
        out[group] = per_class_topk(scores, y_test, class_names=protocol.classes(group))
        out["predictions"][group] = prediction_record(scores)
        out["choices"][group] = dict(getattr(clf, "chosen", {}) or {})
        if ctx.names:  # every method on the test images whose names lack their class word (text's hard part)
            out["subsets"][group] = subset_row(scores, y_test, without_class_word(ctx, protocol, group),
                                               protocol.classes(group))
    if method.kshot and "tail" in embeddings:
        tail = feats_of[embeddings["tail"].name]
        out["shots"] = kshot_study(ctx, method, protocol, tail, out["tail"])
    return out


def kshot_study(ctx: RunContext, method: BenchmarkMethod, protocol: TransferProtocol,
                feats: dict[str, torch.Tensor], all_shots: TopKResult) -> dict[str, dict[str, float]]:
    """Tail macro/micro top-1 with the method fitted on K train images per class (:func:`kshot_curve`), and
    with every train image ("all")."""
    ev = ctx.cfg.evaluation
    base_mean = feats["head_train"].mean(0)
    out = kshot_curve(lambda: method.classifier(ctx.cfg, base_mean), feats["tail_train"],
                      protocol.targets(protocol.tail_train, "tail"), feats["tail_test"],
                      torch.from_numpy(protocol.targets(protocol.tail_test, "tail")), ks=ev.kshot,
                      draws=ev.kshot_draws, seed=ctx.cfg.seed, class_names=protocol.tail)
    out["all"] = {"macro_top1": all_shots.macro["top1"], "macro_top1_std": 0.0,
                  "micro_top1": all_shots.micro["top1"], "micro_top1_std": 0.0, "draws": 1}
    return out
