"""Seeded draws from torch's global generator that leave every global RNG state as it was."""
from __future__ import annotations

import pytest
import torch

from fewshot.utils.seeding import derive_seed, seeded_global_rng


def test_draws_inside_equal_those_after_torch_manual_seed():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        expected = torch.randn(5)
    with seeded_global_rng(11):
        got = torch.randn(5)
    assert torch.equal(got, expected)


def test_global_cpu_state_is_restored_even_when_the_block_raises():
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"), seeded_global_rng(3):
        torch.randn(4)
        raise RuntimeError("boom")
    assert torch.equal(torch.get_rng_state(), before)


def test_cpu_only_block_touches_no_cuda_generator(monkeypatch):
    calls = []
    for fn in ("manual_seed", "manual_seed_all", "seed", "seed_all", "get_rng_state", "set_rng_state"):
        monkeypatch.setattr(torch.cuda, fn, lambda *a, _fn=fn, **k: calls.append(_fn))
    with seeded_global_rng(0):
        torch.rand(2)
    assert calls == []


def test_derived_seeds_differ_by_stream_and_stay_fixed():
    assert derive_seed(0, "train") == derive_seed(0, "train") != derive_seed(0, "val")
    assert 0 <= derive_seed(7, "train") < 2**63
