"""The product-name branch: text features as an embedding of the transfer protocol, and the ``text`` method's
classifier.

The ``text`` embedding is not a backbone: the configured encoder fitted on the names of the head and tail train
images (never a test name), applied to every part, cached by :func:`fewshot.text.cache.cached_text_features`.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.config import BenchmarkConfig
from benchmarks.engine.context import RunContext
from benchmarks.registry.embeddings import Embedding, register_embedding
from fewshot.data.cache import default_cache_root
from fewshot.methods import CRT, FewShotClassifier, LogitAdjust, NearestCentroid, TauNorm, TextHead
from fewshot.methods.balanced_logreg import BalancedLogReg
from fewshot.text.cache import cached_text_features
from fewshot.text.encoders import ENCODERS


def check_text(cfg: BenchmarkConfig) -> None:
    """Refuse a text encoder that is unknown or whose optional packages are missing (one clear line)."""
    encoder = cfg.text.encoder
    if encoder not in ENCODERS:
        raise ValueError(f"text.encoder={encoder!r} is unknown; known: {', '.join(ENCODERS)}")
    if ENCODERS[encoder].missing():
        raise ValueError(f"text.encoder={encoder!r} needs {', '.join(ENCODERS[encoder].missing())}: "
                         f"{ENCODERS[encoder].install_hint}")


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
        "logreg": lambda: BalancedLogReg(),
    }[t.classifier]()
    return TextHead(head)


def text_features(ctx: RunContext, emb: Embedding, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """{part: text features [n, d]} of the dataset rows of each part; the encoder is fitted on the names of
    the "head_train" and "tail_train" rows."""
    names = np.asarray(ctx.names, dtype=object)
    if len(names) != len(ctx.labels):
        raise ValueError(f"the run context has {len(names)} names for {len(ctx.labels)} images")
    fit_rows = np.concatenate([rows["head_train"], rows["tail_train"]])
    if not any(str(n).strip() for n in names[fit_rows]):
        # An image folder has no names, a manifest may have no text column: nothing to fit an encoder on.
        tqdm.write("[text] no train image has a name (no text column in the data): the text branch abstains on "
                   "every image (uniform scores; the fusion methods then score as their image method)")
        return {p: torch.zeros(len(r), 1) for p, r in rows.items()}
    t = ctx.cfg.text
    kwargs = {"max_features": t.max_features} if t.encoder in ("tfidf", "bow") else {"device": str(ctx.device)}
    return cached_text_features(names, fit_rows, rows, encoder=t.encoder, cache_root=default_cache_root(),
                                tag=ctx.image_key, **kwargs)


def text_inputs(cfg: BenchmarkConfig) -> dict:
    return {"text": {"encoder": cfg.text.encoder, "max_features": cfg.text.max_features},
            "n_head": cfg.data.n_head, "min_train": cfg.data.min_train, **cfg.data.split_inputs(),
            "dedupe": cfg.data.dedupe}


# Product names, not images: the text encoder is fitted on train names when the features are made.
register_embedding(Embedding("text", "transfer", "text_features", "text", None, text_inputs, sees_tail=True,
                             reads="name", features=text_features, checks=(check_text,)))
