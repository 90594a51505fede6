"""Text features computed once per (encoder settings, names): ``$FEWSHOT_CACHE/text/<key>.pt`` + ``<key>.json``.

A sentence encoder takes minutes on a CPU for a catalogue's names, and every method reading names needs the
same features, so they are cached like the image features (:mod:`fewshot.images.features`): the key hashes
the encoder settings and every name of every part (the names the encoder is fitted on included), so other
names or settings can never be served stale features. ``fewshot cache --list / --prune`` know the folder
(:mod:`fewshot.images.cache_admin`); the ``.json`` says what a file holds, for listings. Writes are atomic.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewshot.text.encoders import get_encoder
from fewshot.utils.io import atomic_torch_save, atomic_write_json

TEXT_DIR = "text"


def text_cache_key(names: Sequence[str], fit_rows: np.ndarray, parts: Mapping[str, np.ndarray],
                   settings: Mapping[str, Any]) -> str:
    """The cache key: the encoder settings, the names of the fit rows and of every part (24 hex characters)."""
    names = np.asarray(names, dtype=object)
    blob = {**settings, "fit": names[np.asarray(fit_rows)].tolist(),
            "names": [names[np.asarray(r)].tolist() for r in parts.values()], "parts": list(parts)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:24]


def cached_text_features(names: Sequence[str], fit_rows: np.ndarray, parts: Mapping[str, np.ndarray], *,
                         encoder: str, cache_root: str | os.PathLike, tag: str = "",
                         **encoder_kwargs: Any) -> dict[str, torch.Tensor]:
    """{part: features [len(rows), d]} of ``names[rows]`` for each part, by ``encoder`` (with
    ``encoder_kwargs``) fitted on ``names[fit_rows]``; read from the cache when there. ``tag`` (e.g. the
    dataset's pixel hash) is recorded beside the file so that ``fewshot cache --prune --keep RUN`` keeps it."""
    settings = {"encoder": encoder, **{k: v for k, v in encoder_kwargs.items() if k != "device"}}
    key = text_cache_key(names, fit_rows, parts, settings)
    folder = Path(cache_root) / TEXT_DIR
    path = folder / f"{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    names = np.asarray(names, dtype=object)
    model = get_encoder(encoder, **encoder_kwargs).fit(names[np.asarray(fit_rows)].tolist())
    feats = {p: model.transform(names[np.asarray(r)].tolist()) for p, r in parts.items()}
    atomic_torch_save(feats, path)
    atomic_write_json(folder / f"{key}.json", {
        "key": key, "image_key": tag, **settings, "dim": int(model.dim),
        "n": {p: len(r) for p, r in parts.items()}, "n_fit": int(len(fit_rows))})
    return feats
