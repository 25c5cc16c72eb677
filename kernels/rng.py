"""Counter-based random numbers for the draw: one uniform per (seed, step, token), no state.

A draw is the exponential race ``argmax_i (logit_i − ln E_i)`` with ``E_i = −ln u_i``: it samples
exactly from ``softmax(logits)`` and needs no prefix sum, so the CPU kernel, the CUDA kernel and the
torch reference (:func:`entrodec.decoding.draw.race_draw`) pick the same token for the same seed
whatever their reduction order. A row's key comes from SplitMix64's finaliser; ``u_i`` from two 32-bit
hashes (lowbias32) of Weyl counters, one per half of the key:

    key   = mix64(mix64(seed ^ SALT) + step · GOLDEN)
    high  = mix32(lo32(key) + (i + 1) · WEYL_HIGH)               32 bits
    low   = mix32(hi32(key) + (i + 1) · WEYL_LOW) >> 11          21 bits
    u_i   = (high · 2²¹ + low + 1) · 2⁻⁵³                         in (0, 1]

The high word alone bounds ``u_i <= (high + 1) · 2⁻³²``, and most tokens lose the race on that bound:
the CPU kernel hashes it 8 lanes at a time (32-bit multiplies vectorise on AVX2, 64-bit ones do not)
and computes the rest for the few that might win.

These are plain Python functions on ``numpy.uint64`` values (32-bit words held in them, masked after
each product); each backend compiles them (``njit`` on the CPU, ``cuda.jit(device=True)`` on the GPU)
and the torch reference mirrors them with int64 ops.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
SALT = 0x243F6A8885A308D3
SHIFTS = (30, 27, 31)
# lowbias32 (Chris Wellons' hash-prospector): two odd multipliers, three xor-shifts
MIX32_MULS = (0x7FEB352D, 0x846CA68B)
MIX32_SHIFTS = (16, 15, 16)
WEYL_HIGH = 0x9E3779B9  # odd: i ↦ key + i · WEYL is a bijection of 32-bit words
WEYL_LOW = 0x7F4A7C15
LOW_BITS = 21  # u's bits below the high word

_GOLDEN = np.uint64(GOLDEN)
_MUL1 = np.uint64(MUL1)
_MUL2 = np.uint64(MUL2)
_SALT = np.uint64(SALT)
_S1, _S2, _S3 = (np.uint64(s) for s in SHIFTS)
_M32_1, _M32_2 = (np.uint64(m) for m in MIX32_MULS)
_T1, _T2, _T3 = (np.uint64(s) for s in MIX32_SHIFTS)
_WEYL_HIGH = np.uint64(WEYL_HIGH)
_WEYL_LOW = np.uint64(WEYL_LOW)
_WORD = np.uint64(0xFFFFFFFF)
_THIRTY_TWO = np.uint64(32)
_LOW_SHIFT = np.uint64(32 - LOW_BITS)
_LOW_SCALE = float(1 << LOW_BITS)
_TWO_M53 = 2.0 ** -53


def mix64(x):
    """SplitMix64's finaliser: a bijection of uint64 with full avalanche."""
    x = (x ^ (x >> _S1)) * _MUL1
    x = (x ^ (x >> _S2)) * _MUL2
    return x ^ (x >> _S3)


def mix32(x):
    """lowbias32: a bijection of 32-bit words (held in a uint64) with low bias."""
    x = ((x ^ (x >> _T1)) * _M32_1) & _WORD
    x = ((x ^ (x >> _T2)) * _M32_2) & _WORD
    return x ^ (x >> _T3)


def step_key(seed, step):
    """The key of one row at one decoding step (``seed`` and ``step`` as int64, reinterpreted)."""
    return mix64(mix64(np.uint64(seed) ^ _SALT) + np.uint64(step) * _GOLDEN)


def token_high(key, token):
    """The high 32 bits of ``token``'s uniform under ``key``."""
    return mix32(((key & _WORD) + (np.uint64(token) + np.uint64(1)) * _WEYL_HIGH) & _WORD)


def token_uniform(key, token):
    """The uniform number in (0, 1] of ``token`` under ``key``."""
    low = mix32(((key >> _THIRTY_TWO) + (np.uint64(token) + np.uint64(1)) * _WEYL_LOW) & _WORD) >> _LOW_SHIFT
    return (np.float64(token_high(key, token)) * _LOW_SCALE + np.float64(low) + 1.0) * _TWO_M53


def race_score(neg_x, u):
    """``−x − ln(−ln u)``: the token with the largest score wins the exponential race."""
    e = -math.log(u)
    if e <= 0.0:
        return math.inf
    return neg_x - math.log(e)
