"""Counter-based randomness: every draw is a pure function of (key, episode, stream, position).

Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011) is a
keyed bijection of a 128-bit counter. Keying it on the sampler's seed and putting the episode index in the
counter makes episode ``i`` independent of how many episodes were drawn before it, of the iteration order
and of the DataLoader worker, and lets a whole chunk of episodes be drawn with one vectorised numpy call.
"""
from __future__ import annotations

import sys

import numpy as np

_M0, _M1 = np.uint32(0xD2511F53), np.uint32(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
# A uint64 product viewed as two uint32 words: which of them is the low one depends on byte order.
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)


def seed_to_key(seed: int) -> tuple[int, int]:
    """Two 32-bit Philox key words from any non-negative int seed (hashed by numpy's SeedSequence)."""
    state = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint32)
    return int(state[0]), int(state[1])


def philox4x32(counter: tuple[np.ndarray | int, ...], key: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 of broadcastable counter words (32-bit values); returns the 4 uint32 output words.

    Each round multiplies two words into 64-bit products and reads their high and low halves as
    uint32 views, so no shift or mask pass over 64-bit words is needed.
    """
    shape = np.broadcast_shapes((1,), *(np.shape(c) for c in counter))
    c0, c1, c2, c3 = (np.broadcast_to(np.asarray(c).astype(np.uint32), shape) for c in counter)
    k0, k1 = key
    for _ in range(10):
        p0 = np.multiply(c0, _M0, dtype=np.uint64).view(np.uint32)
        p1 = np.multiply(c2, _M1, dtype=np.uint64).view(np.uint32)
        c0, c1, c2, c3 = (
            p1[..., _HI::2] ^ c1 ^ np.uint32(k0),
            p1[..., _LO::2],
            p0[..., _HI::2] ^ c3 ^ np.uint32(k1),
            p0[..., _LO::2],
        )
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _blocks(key: tuple[int, int], episodes: np.ndarray, stream: int, n_blocks: int) -> np.ndarray:
    """Philox output words [len(episodes), 4 * n_blocks] (uint32) of one stream: counter blocks 0.."""
    episodes = np.asarray(episodes, dtype=np.uint64)[:, None]
    blocks = np.arange(n_blocks, dtype=np.uint32)[None, :]
    words = philox4x32((episodes & np.uint64(0xFFFFFFFF), episodes >> np.uint64(32), stream, blocks), key)
    return np.stack(words, axis=-1).reshape(len(episodes), 4 * n_blocks)


def philox_words(key: tuple[int, int], episodes: np.ndarray, stream: int, n: int) -> np.ndarray:
    """Random 32-bit words [len(episodes), n] (uint32) of one stream."""
    return _blocks(key, episodes, stream, (n + 3) // 4)[:, :n]


def uniforms(key: tuple[int, int], episodes: np.ndarray, stream: int, n: int) -> np.ndarray:
    """Uniform float64 draws in [0, 1) of shape [len(episodes), n], 53 random bits each.

    Draw ``j`` of ``episodes[e]`` on ``stream`` depends only on (key, episodes[e], stream, j).
    """
    w = _blocks(key, episodes, stream, (n + 1) // 2)
    # Two 32-bit words make one 53-bit mantissa (27 + 26 bits), the standard double construction.
    # float64 holds the < 2^53 integer exactly.
    mantissa = (w[:, 0 : 2 * n : 2] >> np.uint32(5)) * 67108864.0 + (w[:, 1 : 2 * n : 2] >> np.uint32(6))
    return mantissa * (1.0 / 9007199254740992.0)


def floyd_choose(u: np.ndarray, n: np.ndarray | int, k: int) -> np.ndarray:
    """k distinct positions out of range(n) from k uniforms on the last axis (Floyd's algorithm).

    ``u``: [..., k] uniforms; ``n``: population sizes broadcastable to ``u[..., 0]``, each >= k.
    Returns int64 [..., k]: a uniformly random k-subset (R. Floyd, in Bentley, "Programming Pearls",
    CACM 1987), in no particular order. Cost O(k^2) whatever n is, so a class of 50,000 items costs
    the same as one of 20.
    """
    shape = u.shape
    n = np.broadcast_to(np.asarray(n, dtype=np.int64), shape[:-1]).reshape(1, -1)
    # Step j on the leading axis, so each membership test reduces over rows (fast in numpy).
    top = n - k + np.arange(k)[:, None]  # step j draws from [0, top_j]
    # min() guards the float product rounding up to top_j + 1 for huge populations.
    out = np.minimum((u.reshape(-1, k).T * (top + 1)).astype(np.int64), top)
    for j in range(1, k):
        np.copyto(out[j], top[j], where=(out[:j] == out[j]).any(axis=0))
    return np.ascontiguousarray(out.T).reshape(shape)


def random_order(key: tuple[int, int], episodes: np.ndarray, stream: int, shape: tuple[int, ...]) -> np.ndarray:
    """Independent uniformly random permutations of the last axis: int64 [len(episodes), *shape].

    Sorts 32-bit random keys with the position in the low bits, so keys never tie and the result does
    not depend on the sort algorithm (numpy's fast introsort is used). Equal random words (probability
    about k^2 / 2^33 per row) keep their positions' order: a negligible bias toward the identity.
    """
    k = shape[-1]
    n = int(np.prod(shape))
    w = philox_words(key, episodes, stream, n).reshape(len(episodes), *shape)
    keys = (w.astype(np.uint64) << np.uint64(max(1, (k - 1).bit_length()))) | np.arange(k, dtype=np.uint64)
    return np.argsort(keys, axis=-1, kind="quicksort")
