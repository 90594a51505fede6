"""Seeds for independent random streams derived from one config seed.

The trainer, the validation split and the model initialisation all start from ``config.seed``; giving each
its own stream (NumPy's ``SeedSequence`` mixes the seed with a stream name) keeps them uncorrelated while
each stays a pure function of the one seed.
"""
from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named ``stream`` of ``seed`` (stable across runs, platforms and versions)."""
    if seed < 0:
        raise ValueError(f"seed={seed} must be a non-negative integer")
    state = np.random.SeedSequence([seed, zlib.crc32(stream.encode())]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))
