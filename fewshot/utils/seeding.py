"""Seeds for independent random streams derived from one config seed, and seeded draws from torch's
global generator that leave every global RNG state as it was.

The trainer, the validation split and the model initialisation all start from ``config.seed``; giving each
its own stream (NumPy's ``SeedSequence`` mixes the seed with a stream name) keeps them uncorrelated while
each stays a pure function of the one seed.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named ``stream`` of ``seed`` (stable across runs, platforms and versions)."""
    if seed < 0:
        raise ValueError(f"seed={seed} must be a non-negative integer")
    state = np.random.SeedSequence([seed, zlib.crc32(stream.encode())]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


@contextmanager
def seeded_global_rng(seed: int, cuda_device: torch.device | None = None) -> Iterator[None]:
    """Inside the block, torch's global CPU generator (and that of ``cuda_device``, when given) is seeded
    with ``seed``; on exit every state is put back, so the caller's random streams are untouched.

    Why not ``fork_rng`` + ``torch.manual_seed``: ``manual_seed`` also reseeds every CUDA generator (and
    MPS/XPU), which ``fork_rng(devices=[])`` does not restore, so building a model silently reset the
    caller's GPU streams. Why the global generator and not a private ``torch.Generator``: ``nn.Module``
    constructors (``reset_parameters``) only draw from the global one. Seeding it with
    ``default_generator.manual_seed(seed)`` gives the very stream ``torch.manual_seed(seed)`` gave on the
    CPU, so initial weights are unchanged from before. Only ``cuda_device`` is seeded: the one device a
    block draws from (dropout in a training step on that GPU)."""
    devices = []
    if cuda_device is not None:
        index = torch.device(cuda_device).index
        devices = [torch.cuda.current_device() if index is None else index]  # "cuda" means the current one
    with torch.random.fork_rng(devices=devices):  # saves and restores exactly these generators
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.default_generators[devices[0]].manual_seed(seed)
        yield
