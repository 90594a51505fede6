"""The episodic protocol's background classes split into training and held-out validation classes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.config import BenchmarkConfig
from fewshot.data.protocols import EpisodicProtocol
from fewshot.utils.errors import UserError
from fewshot.utils.seeding import derive_seed


@dataclass(frozen=True)
class EpisodicSplit:
    """The episodic protocol with its background classes split (seeded) into training and held-out
    validation classes; every choice of epoch is made on validation-class episodes."""

    protocol: EpisodicProtocol
    train_classes: tuple[str, ...]
    val_classes: tuple[str, ...]
    train_idx: np.ndarray
    val_idx: np.ndarray

    @classmethod
    def make(cls, cfg: BenchmarkConfig, protocol: EpisodicProtocol) -> EpisodicSplit:
        """A ``val_classes`` fraction of the background classes is held out whole, at least enough for
        one validation episode's way."""
        names = protocol.background
        n_val = held_out_classes(cfg, len(names))
        if n_val >= len(names):
            raise UserError(f"only {len(names)} background classes: cannot hold out {n_val} for validation; "
                            "lower val_classes or protonet.episodes.val_way")
        rng = np.random.default_rng(derive_seed(cfg.seed, "validation classes"))
        held = set(rng.choice(len(names), n_val, replace=False).tolist())
        train = tuple(c for i, c in enumerate(names) if i not in held)
        val = tuple(c for i, c in enumerate(names) if i in held)
        return cls(protocol, train, val, np.flatnonzero(np.isin(protocol.articles, train)),
                   np.flatnonzero(np.isin(protocol.articles, val)))


def held_out_classes(cfg: BenchmarkConfig, n_background: int) -> int:
    """How many of ``n_background`` background classes :meth:`EpisodicSplit.make` holds out for validation: a
    ``val_classes`` fraction, at least one validation episode's way (``protonet.episodes.val_way``)."""
    return max(cfg.protonet.episodes.val_way, round(cfg.val_classes * n_background))
