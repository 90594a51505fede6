"""The product-name branch in the transfer protocol: text features of every part, the ``text`` head,
the image+text fusion methods, and each method's accuracy on the test names without their class word.

Text features are an "embedding" of kind "text" (:data:`benchmarks.embeddings.EMBEDDINGS`): the
configured encoder fitted on the names of the head and tail train images (never a test name), then
applied to every part. They are cached in ``$FEWSHOT_CACHE/text`` (keyed by the encoder settings and
the names), since a sentence encoder takes minutes on a CPU.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fewshot.data.cache import default_cache_root
from fewshot.data.protocols import TransferProtocol
from fewshot.evaluation import per_class_topk
from fewshot.methods import CRT, FewShotClassifier, LateFusion, LogitAdjust, NearestCentroid, TauNorm, TextHead
from fewshot.text import get_encoder, mentions_own_class
from fewshot.utils.io import atomic_torch_save

if TYPE_CHECKING:
    from benchmarks.config import BenchmarkConfig
    from benchmarks.context import RunContext

FUSION_RULES = {"fusion_gate": "gate", "fusion_product": "product"}


def text_classifier(cfg: BenchmarkConfig) -> FewShotClassifier:
    """The ``text`` method's classifier: ``text.classifier`` on text features, abstaining on empty names."""
    t, lt = cfg.text, cfg.longtail
    linear = {"epochs": lt.epochs, "lr": lt.lr, "batch_size": lt.batch_size, "weight_decays": t.weight_decays,
              "val_fraction": lt.val_fraction, "seed": cfg.seed}
    head: FewShotClassifier = {
        "centroid": lambda: NearestCentroid(normalize="l2n", distance="cosine"),
        "crt": lambda: CRT(**linear),
        "tau_norm": lambda: TauNorm(**linear, taus=lt.taus),
        "logit_adjust": lambda: LogitAdjust(**linear, taus=lt.taus),
    }[t.classifier]()
    return TextHead(head)


def text_parts(ctx: RunContext, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """{part: text features [n, d]} of the dataset rows of each part; the encoder is fitted on the names of
    the "head_train" and "tail_train" rows."""
    names = np.asarray(ctx.names, dtype=object)
    if len(names) != len(ctx.labels):
        raise ValueError(f"the run context has {len(names)} names for {len(ctx.labels)} images")
    if not any(str(n).strip() for n in names[np.concatenate([rows["head_train"], rows["tail_train"]])]):
        # An image folder has no names, a manifest may have no text column: nothing to fit an encoder on.
        tqdm.write("[text] no train image has a name (no text column in the data): the text branch abstains on "
                   "every image (uniform scores; the fusion methods then score as their image method)")
        return {p: torch.zeros(len(r), 1) for p, r in rows.items()}
    settings = {"encoder": ctx.cfg.text.encoder, "max_features": ctx.cfg.text.max_features}
    digest = hashlib.sha256(json.dumps({**settings, "names": [names[r].tolist() for r in rows.values()]},
                                       sort_keys=True).encode()).hexdigest()[:24]
    path = default_cache_root() / "text" / f"{digest}.pt"
    if path.exists():
        feats = torch.load(path)
    else:
        kwargs = ({"max_features": settings["max_features"]} if settings["encoder"] == "tfidf"
                  else {"device": str(ctx.device)})
        encoder = get_encoder(settings["encoder"], **kwargs).fit(names[np.concatenate([rows["head_train"],
                                                                                      rows["tail_train"]])])
        feats = {p: encoder.transform(names[r].tolist()) for p, r in rows.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(feats, path)
    return feats


def without_class_word(ctx: RunContext, protocol: TransferProtocol, group: str) -> np.ndarray:
    """bool [n_test of ``group``]: test images whose name does not contain their class name."""
    rows = getattr(protocol, f"{group}_test")
    names = np.asarray(ctx.names, dtype=object)[rows].tolist()
    return ~mentions_own_class(names, protocol.articles[rows].tolist())


def subset_row(scores: torch.Tensor, targets: torch.Tensor, mask: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Macro/micro top-1/top-5 of ``scores`` [n, C] on the items of ``mask`` (macro over the classes
    that have such items), and how many items that is."""
    if not mask.any():
        return {"n": 0}
    keep = torch.from_numpy(mask)
    result = per_class_topk(scores[keep], targets[keep], class_names=class_names)
    return {"n": int(mask.sum()), **result.summary()}


def fusion_scores(ctx: RunContext, protocol: TransferProtocol, image_parts: dict[str, dict[str, torch.Tensor]],
                  text: dict[str, torch.Tensor], image_head: Any) -> dict:
    """Fit one :class:`LateFusion` per group (the image method's embedding of that group, then text) and
    score its test images by both rules: {rule: {group: TopKResult}, "choices": {group: dict},
    "subsets": {rule: {group: row}}}."""
    cfg = ctx.cfg
    out: dict = {rule: {} for rule in FUSION_RULES.values()}
    out.update(choices={}, subsets={rule: {} for rule in FUSION_RULES.values()})
    for group, feats in image_parts.items():
        base_mean = feats["head_train"].mean(0)
        fusion = LateFusion(image_head(cfg, base_mean), text_classifier(cfg), feats["head_train"].shape[1],
                            val_fraction=cfg.fusion.val_fraction, seed=cfg.seed, thresholds=cfg.fusion.thresholds)
        y_train = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_train"), group))
        y_test = torch.from_numpy(protocol.targets(getattr(protocol, f"{group}_test"), group))
        fusion.fit(torch.cat([feats[f"{group}_train"], text[f"{group}_train"]], 1), y_train)
        fused = fusion.fused(torch.cat([feats[f"{group}_test"], text[f"{group}_test"]], 1))
        mask = without_class_word(ctx, protocol, group)
        for rule in FUSION_RULES.values():
            out[rule][group] = per_class_topk(fused[rule].float(), y_test, class_names=protocol.classes(group))
            out["subsets"][rule][group] = subset_row(fused[rule].float(), y_test, mask, protocol.classes(group))
        out["choices"][group] = fusion.chosen
    return out


def subset_summary(transfer: dict, ctx: RunContext, protocol: TransferProtocol) -> dict:
    """summary.json's ``name_subsets``: per group, the share of test names that contain their class name,
    and each method's figures on the test images whose names do not."""
    out: dict = {}
    for group in ("head", "tail", "all"):
        rows = getattr(protocol, f"{group}_test")
        if not len(rows) or not any(group in by_group for by_group in transfer.get("subsets", {}).values()):
            continue
        mask = without_class_word(ctx, protocol, group)
        out[group] = {"n_test": len(rows), "n_without_class_word": int(mask.sum()),
                      "share_with_class_word": float(1 - mask.mean()),
                      "methods": {m: by_group[group] for m, by_group in transfer["subsets"].items() if group in by_group}}
    return out
