"""The counter-based generator behind every draw: the CPU kernel's vectorised high word, the compiled
generator and the torch mirror agree bit for bit, and the numbers are uniform and independent across
tokens, steps and seeds (statistical tests that a weak hash fails)."""

import numba
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare, kstest

from entrodec.decoding.draw import step_keys, token_uniforms
from entrodec.kernels import cpu, rng

COMPILED = cpu.COMPILED
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


@numba.njit
def _high_halves(key, first, count):
    out = np.empty(count, np.int64)
    for j in range(count):
        out[j] = cpu.high_half(key, first + j)
    return out


def _uniforms(seed: int, step: int, tokens: np.ndarray) -> np.ndarray:
    keys = step_keys(torch.tensor([seed]), torch.tensor([step])).expand(len(tokens))
    return token_uniforms(keys, torch.from_numpy(tokens)).numpy()


@settings(max_examples=50, deadline=None)
@given(seed=INT64, step=st.integers(0, 1 << 20), first=st.integers(0, (1 << 31) - 300))
def test_the_kernels_high_word_and_the_torch_mirror_equal_the_generator(seed, step, first):
    key = np.uint64(COMPILED["step_key"](seed, step))
    tokens = np.arange(first, first + 257)
    high = np.array([int(COMPILED["token_high"](key, int(i))) for i in tokens])
    u = np.array([COMPILED["token_uniform"](key, int(i)) for i in tokens])
    assert np.array_equal(_high_halves(key, first, len(tokens)), high >> 1)
    assert np.array_equal(_uniforms(seed, step, tokens), u)
    assert ((u > 0) & (u <= 1)).all()
    # the race's screen rests on this bound (cpu.race_screen)
    assert (u <= ((high >> 1) + 1.0) * 2.0**-31).all() and (u <= (high + 1.0) * 2.0**-32).all()


def test_uniforms_are_uniform_over_tokens_steps_and_seeds():
    tokens = np.arange(50_000)
    for seed, step in ((0, 0), (1, 0), (0, 1), (-5, 123_456)):
        u = _uniforms(seed, step, tokens)
        assert kstest(u, "uniform").pvalue > 1e-3, (seed, step)
        # the low bits too: a generator whose low word were stuck would fail this
        low = np.floor(u * 2.0**53) % 64
        assert chisquare(np.bincount(low.astype(np.int64), minlength=64)).pvalue > 1e-3, (seed, step)


def test_neighbouring_tokens_steps_and_seeds_are_independent():
    """Pairs (u of one, u of its neighbour) fill a 16×16 grid evenly: consecutive tokens under one key,
    one token at consecutive steps, one token under consecutive seeds."""
    n = 40_001
    along = [_uniforms(3, 7, np.arange(n))]
    for token in (11, 50_000):
        along.append(token_uniforms(step_keys(torch.full((n,), 3), torch.arange(n)), torch.full((n,), token)).numpy())
    along.append(token_uniforms(step_keys(torch.arange(n), torch.full((n,), 7)), torch.full((n,), 11)).numpy())
    for u in along:
        bins = np.minimum(np.floor(u * 16), 15)  # u = 1 is possible (once in 2^53)
        cells = bins[:-1] * 16 + bins[1:]
        assert chisquare(np.bincount(cells.astype(np.int64), minlength=256)).pvalue > 1e-3


def test_no_two_tokens_of_a_key_share_a_high_word():
    """Odd multipliers and Weyl steps make the high word a bijection of the token (below 2^32): checked
    on a 2^20-token slice."""
    for value in (*rng.MIX32_MULS, rng.WEYL_HIGH, rng.WEYL_LOW):
        assert value % 2 == 1
    u = _uniforms(42, 0, np.arange(1 << 20))
    high = np.floor((u * 2.0**53 - 1) / 2.0**21).astype(np.int64)
    assert len(np.unique(high)) == 1 << 20
