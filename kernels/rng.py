"""Counter-based random numbers for the draw: one uniform per (seed, step, token), no state.

A draw is the exponential race ``argmax_i (logit_i − ln E_i)`` with ``E_i = −ln u_i``: it samples
exactly from ``softmax(logits)`` and needs no prefix sum, so the CPU kernel, the CUDA kernel and the
torch reference (:func:`entrodec.decoding.draw.race_draw`) pick the same token for the same seed
whatever their reduction order. ``u_i`` comes from SplitMix64's finaliser applied to a counter:

    key  = mix(mix(seed ^ SALT) + step · GOLDEN)
    u_i  = ((mix(key + (i + 1) · GOLDEN) >> 11) + 1) · 2⁻⁵³        in (0, 1]

These are plain Python functions on ``numpy.uint64`` values; each backend compiles them (``njit`` on
the CPU, ``cuda.jit(device=True)`` on the GPU) and the torch reference mirrors them with int64 ops.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
SALT = 0x243F6A8885A308D3
SHIFTS = (30, 27, 31)

_GOLDEN = np.uint64(GOLDEN)
_MUL1 = np.uint64(MUL1)
_MUL2 = np.uint64(MUL2)
_SALT = np.uint64(SALT)
_S1, _S2, _S3 = (np.uint64(s) for s in SHIFTS)
_ONE = np.uint64(1)
_ELEVEN = np.uint64(11)
_TWO_M53 = 2.0 ** -53


def mix64(x):
    """SplitMix64's finaliser: a bijection of uint64 with full avalanche."""
    x = (x ^ (x >> _S1)) * _MUL1
    x = (x ^ (x >> _S2)) * _MUL2
    return x ^ (x >> _S3)


def step_key(seed, step):
    """The key of one row at one decoding step (``seed`` and ``step`` as int64, reinterpreted)."""
    return mix64(mix64(np.uint64(seed) ^ _SALT) + np.uint64(step) * _GOLDEN)


def token_uniform(key, token):
    """The uniform number in (0, 1] of ``token`` under ``key``."""
    bits = mix64(key + (np.uint64(token) + _ONE) * _GOLDEN)
    return (np.float64(bits >> _ELEVEN) + 1.0) * _TWO_M53


def race_score(neg_x, u):
    """``−x − ln(−ln u)``: the token with the largest score wins the exponential race."""
    e = -math.log(u)
    if e <= 0.0:
        return math.inf
    return neg_x - math.log(e)
