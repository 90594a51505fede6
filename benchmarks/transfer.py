"""The transfer protocol's evaluation: every registered method on the same head and tail test images.

Three groups: head, tail, and the joint group "all" (head + tail classes, one classifier over every
class). Feature-based methods fit their head on an embedding's train features of a group (all of them,
then K per class for the tail's K-shot study) and score the group's test features; scorer methods (the
two-stage baselines) bring their own scores. Everything goes through the one evaluator, :func:`fewshot.evaluation.per_class_topk`.
"""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.context import RunContext
from benchmarks.embeddings import Embedding, get_embedding, in_report_order, train_embeddings
from benchmarks.methods import BenchmarkMethod, get_method
from benchmarks.text import fusion_scores, subset_row, text_parts, without_class_word
from fewshot.config import to_dict
from fewshot.data.protocols import TRANSFER_GROUPS, TransferProtocol
from fewshot.evaluation import TopKResult, per_class_topk

PARTS = ("head_train", "head_test", "tail_train", "tail_test")


def run_transfer(ctx: RunContext, protocol: TransferProtocol) -> dict:
    """{"head" | "tail" | "all": {method: TopKResult}, "shots": {method: {K: stats}}, "shots_kind": {method:
    str}, "choices": {method: {group: what the head chose on validation}}}, each in the protocol's method
    order (embeddings' training order, then the registry's)."""
    methods = ctx.methods("transfer")
    trained = train_embeddings(ctx, "transfer", protocol, [e for m in methods for e in m.groups().values()])
    results: dict = {"head": {}, "tail": {}, "all": {}, "shots": {}, "shots_kind": {}, "choices": {}, "subsets": {}}
    for method in in_report_order(methods, "transfer"):
        if method.scorer is not None:
            scored = method.scorer(ctx, protocol, trained)
            for group in TRANSFER_GROUPS:
                if group in scored:
                    results[group][method.name] = scored[group]
            for key in ("choices", "subsets"):
                if scored.get(key):
                    results[key][method.name] = scored[key]
            continue
        embeddings = {group: get_embedding(name) for group, name in method.groups().items()}
        upstream = [ctx.phases.keys[e.phase] for e in dict.fromkeys(embeddings.values())]
        key = ctx.phase_key(f"eval_{method.name}", _eval_inputs(ctx, method), upstream)
        scored = ctx.phases.run(f"eval_{method.name}", key,
                                lambda: evaluate_features(ctx, method, protocol, embeddings))
        for group in embeddings:
            results[group][method.name] = scored[group]
        if any(scored["choices"].values()):
            results["choices"][method.name] = scored["choices"]
        if scored.get("subsets"):
            results["subsets"][method.name] = scored["subsets"]
        if "shots" in scored:
            results["shots"][method.name] = scored["shots"]
            results["shots_kind"][method.name] = ("prototype subsampling" if embeddings["tail"].sees_tail
                                                  else "few-shot")
    return results


def _eval_inputs(ctx: RunContext, method: BenchmarkMethod) -> dict:
    cfg = ctx.cfg
    data = to_dict(cfg.data)
    return {"method": method.name, "groups": method.groups(), "evaluation": to_dict(cfg.evaluation),
            "seed": cfg.seed, "cpu_amp": cfg.cpu_amp, **{k: data[k] for k in ("n_head", "min_train", "dedupe")},
            **{name: to_dict(getattr(cfg, name)) for name in method.settings}}


def embed_parts(ctx: RunContext, protocol: TransferProtocol, checkpoint: str, backbone: str) -> dict[str, torch.Tensor]:
    """{part: features [n, D]} of the head and tail train and test images (PARTS). One feature-cache
    entry per embedding, whatever the methods and groups that read it."""
    rows = np.concatenate([getattr(protocol, p) for p in PARTS])
    bounds = np.cumsum([0] + [len(getattr(protocol, p)) for p in PARTS])
    embedded = ctx.features(checkpoint, rows, backbone)
    return {p: embedded[bounds[i]:bounds[i + 1]] for i, p in enumerate(PARTS)}


def parts_of(ctx: RunContext, protocol: TransferProtocol, emb: Embedding) -> dict[str, torch.Tensor]:
    """{part: features} of an embedding (a backbone's image features, or product-name features) for
    PARTS, plus the joint group's all_train / all_test: their concatenations, head then tail, as
    ``protocol.all_train`` / ``all_test``."""
    if emb.kind == "text":
        feats = text_parts(ctx, {p: getattr(protocol, p) for p in PARTS})
    else:
        feats = embed_parts(ctx, protocol, emb.weights(ctx.out), emb.backbone(ctx.cfg))
    for split in ("train", "test"):
        feats[f"all_{split}"] = torch.cat([feats[f"head_{split}"], feats[f"tail_{split}"]])
    return feats


def run_fusion(ctx: RunContext, protocol: TransferProtocol) -> dict:
    """The fusion methods' one phase (both rules from the same fitted branches): see
    :func:`benchmarks.text.fusion_scores`. The image side is ``fusion.image_method`` on its embedding of
    each of its groups."""
    cfg = ctx.cfg
    image_method = get_method(cfg.fusion.image_method)
    embeddings = {group: get_embedding(name) for group, name in image_method.groups().items()}
    train_embeddings(ctx, "transfer", protocol, [*image_method.groups().values(), "text"])
    upstream = [ctx.phases.keys[e.phase] for e in dict.fromkeys([*embeddings.values(), get_embedding("text")])]
    inputs = {**_eval_inputs(ctx, image_method), "method": "fusion", "image_method": image_method.name,
              **{name: to_dict(getattr(cfg, name)) for name in ("longtail", "text", "fusion")}}

    def compute() -> dict:
        feats_of = {e.name: parts_of(ctx, protocol, e) for e in dict.fromkeys(embeddings.values())}
        image_parts = {group: feats_of[e.name] for group, e in embeddings.items()}
        return fusion_scores(ctx, protocol, image_parts, parts_of(ctx, protocol, get_embedding("text")),
                             image_method.head)

    return ctx.phases.run("eval_fusion", ctx.phase_key("eval_fusion", inputs, upstream), compute)


def evaluate_features(ctx: RunContext, method: BenchmarkMethod, protocol: TransferProtocol,
                      embeddings: dict[str, Embedding]) -> dict:
    """For each group, embed its images with that group's embedding, fit the method on every train image
    of the group and take per-class top-k on its test images; then the K-shot study on the tail.
    Returns {group: TopKResult, "choices": {group: dict}, "shots": ... (when ``method.kshot``)}."""
    out: dict = {"choices": {}, "subsets": {}}
    feats_of: dict[str, dict[str, torch.Tensor]] = {}
    for group, emb in embeddings.items():
        if emb.name not in feats_of:
            feats_of[emb.name] = parts_of(ctx, protocol, emb)
        feats = feats_of[emb.name]
        base_mean = feats["head_train"].mean(0)  # the base (head) classes' mean feature, for CL2N
        y_train = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_train"), group))
        y_test = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_test"), group))
        clf = method.head(ctx.cfg, base_mean).fit(feats[f"{group}_train"], y_train)
        scores = clf.scores(feats[f"{group}_test"])
        out[group] = per_class_topk(scores, y_test, class_names=protocol.classes(group))
        out["choices"][group] = dict(getattr(clf, "chosen", {}) or {})
        if ctx.names:  # every method on the test images whose names lack their class word (text's hard part)
            mask = without_class_word(ctx, protocol, group)
            out["subsets"][group] = subset_row(scores, y_test, mask, protocol.classes(group))
    if method.kshot and "tail" in embeddings:
        tail = feats_of[embeddings["tail"].name]
        out["shots"] = kshot_study(ctx, method, protocol, tail, tail["head_train"].mean(0), out["tail"])
    return out


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
