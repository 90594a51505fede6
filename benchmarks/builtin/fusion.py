"""Image + product-name fusion in the transfer protocol: one phase fits :class:`fewshot.methods.LateFusion` per
group and scores every rule of it, and one method per rule (``fusion_<rule>``) reads that phase.

The image side is ``fusion.image_method`` (a registered image-only feature-based transfer method) on its
embedding of each of its groups; the text side is the ``text`` method's classifier on the ``text`` embedding.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.builtin.text import text_classifier
from benchmarks.config import BenchmarkConfig
from benchmarks.engine.codekey import code_digest
from benchmarks.engine.context import RunContext
from benchmarks.engine.names import subset_row, without_class_word
from benchmarks.registry.embeddings import (
    embedding_code,
    embedding_phase,
    get_embedding,
    train_embeddings,
    transfer_parts,
)
from benchmarks.registry.methods import (
    get_method,
    image_classifier_names,
    is_image_classifier,
    method_code,
    method_inputs,
)
from fewshot.config import to_dict
from fewshot.data.protocols import TransferProtocol
from fewshot.evaluation import per_class_topk
from fewshot.evaluation.predictions import prediction_record
from fewshot.methods import LateFusion
from fewshot.methods.fusion import RULES


def check_image_method(cfg: BenchmarkConfig) -> None:
    """The fusion methods' image side must be a registered image-only feature-based transfer method."""
    name = cfg.fusion.image_method
    try:
        usable = is_image_classifier(get_method(name))
    except ValueError:
        usable = False
    if not usable:
        raise ValueError(f"fusion.image_method={name!r} must be an image-only feature-based transfer method: "
                         f"one of {', '.join(image_classifier_names())}")


def run_fusion(ctx: RunContext, protocol: TransferProtocol) -> dict:
    """The fusion methods' one phase: {rule: {group: TopKResult}, "choices": {group: dict}, "subsets": {rule:
    {group: row}}, "predictions": {rule: {group: record}}}, both rules from the same fitted branches."""
    cfg = ctx.cfg
    image_method = get_method(cfg.fusion.image_method)
    embeddings = {group: get_embedding(name) for group, name in image_method.groups().items()}
    train_embeddings(ctx, "transfer", protocol, [*image_method.groups().values(), "text"])
    text = get_embedding("text")
    upstream = [ctx.phases.keys[embedding_phase(ctx, e)] for e in dict.fromkeys([*embeddings.values(), text])]
    inputs = {**method_inputs(cfg, image_method), "method": "fusion", "image_method": image_method.name,
              **{name: to_dict(getattr(cfg, name)) for name in ("longtail", "text", "fusion")}}
    code = "/".join([method_code(image_method), embedding_code(text), code_digest(_fuse)])
    return ctx.phases.run(ctx.phase_name("eval_fusion"), ctx.phase_key("eval_fusion", inputs, upstream, code),
                          lambda: _fuse(ctx, protocol, image_method.classifier, embeddings))


def _fuse(ctx: RunContext, protocol: TransferProtocol, image_classifier: Callable[..., Any],
          embeddings: dict[str, Any]) -> dict:
    """Fit one :class:`LateFusion` per group (the image method's embedding of that group, then text) and score
    its test images by every rule."""
    cfg = ctx.cfg
    feats_of = {e.name: transfer_parts(ctx, protocol, e) for e in dict.fromkeys(embeddings.values())}
    text = transfer_parts(ctx, protocol, get_embedding("text"))
    out: dict = {rule: {} for rule in RULES}
    out.update(choices={}, subsets={rule: {} for rule in RULES}, predictions={rule: {} for rule in RULES})
    for group, emb in embeddings.items():
        feats = feats_of[emb.name]
        base_mean = feats["head_train"].mean(0)
        fusion = LateFusion(image_classifier(cfg, base_mean), text_classifier(cfg), feats["head_train"].shape[1],
                            val_fraction=cfg.fusion.val_fraction, seed=cfg.seed, thresholds=cfg.fusion.thresholds,
                            weights=cfg.fusion.weights)
        train_rows = getattr(protocol, f"{group}_train")
        y_train = torch.from_numpy(protocol.targets(train_rows, group))
        y_test = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_test"), group))
        fusion.fit(torch.cat([feats[f"{group}_train"], text[f"{group}_train"]], 1), y_train,
                   groups=ctx.groups_of(train_rows))
        fused = fusion.fused(torch.cat([feats[f"{group}_test"], text[f"{group}_test"]], 1))
        mask = without_class_word(ctx, protocol, group)
        for rule in RULES:
            out[rule][group] = per_class_topk(fused[rule].float(), y_test, class_names=protocol.classes(group))
            out["predictions"][rule][group] = prediction_record(fused[rule])
            out["subsets"][rule][group] = subset_row(fused[rule].float(), y_test, mask, protocol.classes(group))
        out["choices"][group] = fusion.chosen
    return out


def fusion_scorer(rule: str) -> Callable[..., dict[str, Any]]:
    """The scorer of ``fusion_<rule>``: its rule's figures from the shared fusion phase."""
    if rule not in RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; known: {', '.join(RULES)}")

    def scorer(ctx: RunContext, protocol: TransferProtocol, trained: dict[str, Any]) -> dict[str, Any]:
        scored = run_fusion(ctx, protocol)
        return {**scored[rule], "choices": scored["choices"], "subsets": scored["subsets"][rule],
                "predictions": scored["predictions"][rule]}

    return scorer

