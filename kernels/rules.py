"""Scalar formulas of the sampling rules, written once and compiled by both backends.

Sums over a set of tokens are kept relative to the row's maximum: with ``x_i = s·(z_max − z_i)``
(the scaled gap, >= 0), ``G = Σ e^{−x}`` and ``Q = Σ x·e^{−x}``; the renormalised entropy of the set is
``ln G + Q/G``, whatever the set's share of the whole distribution.

Prefix rules (top-k, top-p, Top-H in both forms) walk tokens by ``x`` ascending, ties by lower id, and
either keep a prefix *through* their target token (top-k, top-p: "L-kinds") or keep everything
*before* it (Top-H: the first rejected token, "R-kinds"). ``target_below`` answers, from the sums over
all tokens up to a pivot, whether the target lies at or below that pivot; ``admitted`` decides one
token of the walk.
"""

from __future__ import annotations

import math

# Prefix-rule kinds.
K_COUNT = 0   # the a-th token (a = k)                                     L-kind
K_TOP_P = 1   # the first token whose mass before it reaches a = p·G       L-kind
K_TOP_H = 2   # the first token whose prefix entropy exceeds a = α·H      R-kind
K_HF = 3      # transformers' rule over the top 100: a = τ, b = ln G₁₀₀, c = G₁₀₀   R-kind

# exp(y) rounds to zero in float64 below −1075·ln 2, in float32 below −150·ln 2.
ZERO_LOG_F64 = 1075.0 * math.log(2.0)
ZERO_LOG_F32 = 150.0 * math.log(2.0)
HAPO_EPS = 1e-6


def entropy_of(g, q):
    """Entropy (nats) of the renormalised set with sums ``G``, ``Q`` (``G > 0``)."""
    return math.log(g) + q / g


def is_inclusive(kind):
    """L-kinds keep their target token; R-kinds keep only what comes before it."""
    return kind == K_COUNT or kind == K_TOP_P


def target_below(kind, cnt, g, q, a, b, c, mk):
    """Whether the rule's target token lies among the ``cnt`` first tokens whose sums are ``g``, ``q``."""
    if kind == K_COUNT:
        return cnt >= a
    if kind == K_TOP_P:
        return cnt >= mk and g >= a
    if cnt <= mk:
        return False
    if kind == K_TOP_H:
        return entropy_of(g, q) > a
    return (q + b * g) / c > a


def admitted(kind, pos, g_before, g_incl, q_incl, x, a, b, c, mk):
    """Whether the token at 0-based position ``pos`` of the walk is kept, given the sums before it and
    through it."""
    if kind == K_COUNT:
        return pos < a
    if pos < mk:
        return True
    if kind == K_TOP_P:
        return g_before < a
    if kind == K_TOP_H:
        return entropy_of(g_incl, q_incl) <= a
    return (q_incl + b * g_incl) / c <= a and x + b < ZERO_LOG_F32


def dynatemp_temperature(n, h, t0, spread, exponent):
    """llama.cpp's dynamic temperature over ``n`` candidates of entropy ``h``."""
    if n <= 1:
        return t0
    normalised = min(max(h / math.log(max(n, 2.0)), 0.0), 1.0)
    low = max(t0 - spread, 0.0)
    high = t0 + spread
    return low + (high - low) * normalised ** exponent


def edt_temperature(h, t0, theta, base):
    """EDT: ``T0 · base^(θ/H)``; zero entropy gives zero temperature (greedy)."""
    if h <= 0.0:
        return 0.0
    return t0 * base ** (theta / h)


def hapo_temperature(h, t0, tau, has_statistics, pivot, spread, scale_pos, scale_neg):
    """HAPO with the sign fixed: ``T0 · (1 + τ·ĥ)``, ĥ the bounded score of ``ln H`` about the pivot."""
    if has_statistics == 0.0:
        return t0
    z = (math.log(max(h, HAPO_EPS)) - pivot) / (spread + HAPO_EPS)
    scaled = z * scale_pos if z > 0.0 else z * scale_neg
    return t0 * (1.0 + tau * min(max(scaled, -1.0), 1.0))
