"""The per-row algorithm of a fused sampler chain, written once for both backends.

These are plain Python functions: :func:`entrodec.kernels.compile.instantiate` clones them into a
namespace holding one backend's *passes* (the functions that touch the whole row, with whatever
parallelism that backend has) and compiles them there, with ``njit`` for the CPU and
``cuda.jit(device=True)`` for the GPU. Nothing here loops over the vocabulary: every scalar it
computes is the same on every thread of a CUDA block, so control flow stays uniform.

The kept set of a row is ``{i : d_i < dt or (d_i == dt and ilo <= i <= ihi)}`` with ``d_i = z_max − z_i``
(raw logits, float64): every rule of the chain keeps a prefix of the order "``d`` ascending, ties by
lower id", so one threshold and one id range describe what survives any sequence of them. The scale
``s`` (product of ``1/T``) turns gaps into the sampled distribution's ``x_i = s·d_i``.

Passes a backend provides (``ws`` is the backend's tuple of work arrays; ``ws[0]`` the pass results,
``ws[1]`` the pivots, ``ws[2]``/``ws[3]`` sorted candidates (gap, id), ``ws[4]`` a copy of the last
full scan):

- ``row_max(z, ws) -> (z_max, n_finite, z_min)``
- ``row_max_bins(z, s, raw, ws) -> (z_max, n_finite, z_min, binned, G, Q)``: row_max's results, and with
  ``binned`` row_bins_rough's histogram at scale ``s`` from the same read of the row; with ``raw``,
  row_raw_sums' results too (NaN when it could not take them). A backend without one returns ``binned``
  false and NaN sums.
- ``row_scan(z, m, s, dt, ilo, ihi, lo, hi, npiv, ws, sums)``: over kept tokens with ``lo < d <= hi``,
  the sums in ``ws[0]`` (layout ``A_*``), and for each pivot ``j`` the sums of those with ``d <= piv[j]``
  (a scan of the whole kept set with ``npiv = 0`` is asked for its count, G and Q alone: the rest may be
  NaN). With ``sums`` false only the counts and extreme gaps are asked for (a backend may compute the
  rest anyway).
- ``row_raw_sums(z, m, ws) -> (G, Q)``: the whole row's sums at ``s = 1``, for the telemetry alone
  (may be less precise than a scan: float32 exponentials on the CPU).
- ``row_scan_rough(z, m, z_min, s, npiv, ws) -> near top``: a row_scan of a row whose every finite token
  is kept, with pivots, whose G, Q and pivot sums may be off by ROUGH_EPS (relative): a search may
  start from it, and its result must be certified (top_h_rough). A backend sets ``ROUGH_SCANS`` when
  its rough scan is cheaper than an exact one.
- ``row_widen_near(z, m, s, npiv, ws) -> near top``: after row_scan_rough, its near tier extended to the
  second-to-last of the pivots now in ``ws[1]``, with the sums of the pivots up to it (exact), when that
  is cheap; returns the tier's top, unchanged when not.
- ``row_bins_rough(z, m, z_min, s, frac, raw, binned, ws) -> (found, n, count, G, G_through, g_rest,
  xg_rest, g_raw, q_raw)``: on a row whose every finite token is kept, the tokens of the first bin of a rough
  histogram of ``x`` whose cumulative mass reaches ``frac`` of the whole (``n`` of them, sorted, into
  ``ws[2]``, ``ws[3]``), the exact count and mass of the tokens before them and the exact mass through
  them, and for those after them their rough mass and an upper bound of their rough ``Σ x·e^-x``
  (top_p_rough); with ``raw``, row_raw_sums' results from the same read, found or not; with ``binned``,
  from row_max_bins' histogram at scale ``s`` (and no raw sums). A backend without one returns ``found``
  false (and NaN raw sums).
- ``row_gather(z, m, dt, ilo, ihi, lo, hi, ws) -> n``: those tokens, sorted, into ``ws[2]``, ``ws[3]``.
- ``row_nth_tied(z, m, dt, ilo, ihi, dval, j, ws) -> id``: the ``j``-th lowest kept id with ``d == dval``.
- ``row_draw(z, m, s, dt, ilo, ihi, key, want, ws) -> (token, n, G, Q)``: the exponential race and the
  sums of the final kept set.
- ``row_write(z, m, s, dt, ilo, ihi, shift, limit, out, ws)``: the processed logits.
"""

from __future__ import annotations

import math

import numpy as np

from .program import (
    DRAW,
    DYNATEMP,
    EDT,
    EPSILON,
    ETA,
    FIXED,
    HAPO,
    MIN_P,
    FLOAT32_PARAMS,
    STATUS_EMPTY,
    T_H_AFTER,
    T_H_BEFORE,
    T_KEPT,
    T_LOGP_AFTER,
    T_LOGP_BEFORE,
    T_STATUS,
    T_TEMPERATURE,
    T_TOKEN,
    TELEMETRY,
    TEMPERATURE,
    TOP_H,
    TOP_H_HF,
    TOP_K,
    TOP_N_SIGMA,
    TOP_P,
    WRITE,
)
from .rules import (
    K_COUNT,
    K_HF,
    K_TOP_H,
    K_TOP_P,
    ZERO_LOG_F32,
    ZERO_LOG_F64,
    admitted,
    dynatemp_temperature,
    edt_temperature,
    entropy_of,
    hapo_temperature,
    is_inclusive,
    target_below,
)

INF = math.inf
ALL_IDS = 1 << 62
HF_CANDIDATES = 100.0
MAX_ROUNDS = 200
SORT_LIMIT = 512  # a bracket this small is gathered and sorted; larger ones are narrowed further
FIRST_ROUND_TOP = 16.0  # scaled nats: the last pivot of a search's first round
# The second-to-last (first_pivots). On a language model's row (SmolLM2 at T = 1.5) the targets of top-p
# 0.9 and of top-k 100 mostly lie between 4 and 8 nats, where a few hundred to a few thousand tokens sit,
# against tens of thousands between 8 and 16; Top-H's (α 0.4) lie below 4, and a near tier out to 8 would
# only cost it time.
NEAR_NATS = 8.0  # searches by count or mass: top-k, top-p, transformers' Top-H (its top 100 first)
NEAR_NATS_SHORT = 4.0  # the paper's Top-H, and threshold rules (min-p 0.1 keeps 2.3 nats)
NOTHING = -1.0  # run_row's ``cached`` when ws[4] holds no scan with pivots
# Relative error bound of a float32 e^-x against the float64 e^{-s·d}: the exponential's own error
# (ROUGH_EPS_TOKEN) and that of x rounded to float32 (three roundings), which grows with x (ROUGH_EPS_X·x).
# Measured over a million gaps at each of 40 scales and maxima: at most 0.68 of this bound.
ROUGH_EPS_TOKEN = 3e-7
ROUGH_EPS_X = 2e-7
# ... and of a rough scan's G and Q (row_scan_rough), whose float32 sums of 256 terms add 255 roundings of
# 2^-24 (the x term is added apart, as ROUGH_EPS_X·x_max).
ROUGH_EPS = 255.0 * 2.0 ** -24 + ROUGH_EPS_TOKEN
ROUGH_X_LIMIT = 87.0  # a rough scan's largest x: beyond it float32's e^-x is 0 and the token adds nothing
MIN_WIDTH = 0.25  # scaled nats: the smallest first step of a later round's geometric pivots
MAX_SCALE = 1e300  # 1/T for a vanishing T: gaps stay finite, everything below the maximum gets zero mass
MIN_TEMPERATURE = 2.2250738585072014e-308  # the smallest normal float64: a subnormal T acts as 0 (greedy)

# Layout of a scan's results.
A_N = 0
A_G = 1
A_Q = 2
A_SX = 3
A_SXX = 4
A_DMIN = 5
A_DMAX = 6
A_PIV = 7  # then (count, G, Q) per pivot


def acc_size(npiv):
    return A_PIV + 3 * npiv


def first_pivots(piv, s, near):
    """A search's first round (scaled nats): FIRST_ROUND_TOP last, ``near`` and ``near / 2`` before it,
    then ×ratio below (×4 for 4 pivots: 1, 4, 8, 16 for ``near = 8``; ×2 for 8). The CPU backend keeps
    the tokens up to ``near`` apart (its near tier), so that a target below it is narrowed over a short
    list instead of the whole row; on a flat row it lowers that tier's top to the next pivot, which is
    why the two lie close."""
    npiv = piv.shape[0]
    ratio = 2.0 ** max(1, 8 // npiv)
    for j in range(npiv - 2):
        piv[j] = near / (2.0 * ratio ** (npiv - 3 - j)) / s
    piv[npiv - 2] = near / s
    piv[npiv - 1] = FIRST_ROUND_TOP / s


def first_rule(ops):
    """The chain's first op other than a temperature (0 if none): the telemetry's scan, made before the
    chain runs, serves its search when the temperatures before it are 1."""
    for op in ops:
        if op != TEMPERATURE:
            return op
    return 0


def search_near(kind):
    """Where the first round of a search for a rule of ``kind`` puts its second-to-last pivot (scaled
    nats)."""
    return NEAR_NATS_SHORT if kind == K_TOP_H else NEAR_NATS


def scan_near(op):
    """The same for a full scan made before ``op`` runs (0: none follows), which serves its search, or
    lists the tokens that a threshold rule reads."""
    return NEAR_NATS if op == TOP_P or op == TOP_K or op == TOP_H_HF else NEAR_NATS_SHORT


def geometric_pivots(piv, lo, s):
    """Pivots above ``lo`` spaced geometrically in scaled nats (×2 for 8 pivots, ×4 for 4): a later
    round of a search whose target lies past its last pivot."""
    npiv = piv.shape[0]
    ratio = 2.0 ** max(1, 8 // npiv)
    start = max(lo, 0.0) * s
    width = max(MIN_WIDTH, start)
    for j in range(npiv):
        piv[j] = (start + width * ratio ** j) / s


def even_pivots(piv, lo, hi):
    n = piv.shape[0]
    for j in range(n):
        piv[j] = lo + (hi - lo) * (j + 1) / (n + 1)


def scan_all(z, m, s, dt, ilo, ihi, near, ws):
    """Sums over the whole kept set, with a search's first round of pivots up to ``near`` (see
    first_pivots), copied to ``ws[4]``."""
    piv = ws[1]
    first_pivots(piv, s, near)
    row_scan(z, m, s, dt, ilo, ihi, -1.0, INF, piv.shape[0], ws, True)
    keep_scan(acc_size(piv.shape[0]), ws)


def scan_sums(z, m, s, dt, ilo, ihi, ws):
    """Count and sums of the whole kept set into ``ws[4]``, without pivots (nothing searches this set:
    the entropy-adaptive temperatures change the scale right after)."""
    row_scan(z, m, s, dt, ilo, ihi, -1.0, INF, 0, ws, True)
    keep_scan(A_PIV, ws)


def keep_scan(size, ws):
    """Copy the first ``size`` results of the last scan (``ws[0]``) to ``ws[4]``, where later ops find them."""
    acc = ws[0]
    cache = ws[4]
    for k in range(size):
        cache[k] = acc[k]


def walk(cand_d, n, s, kind, bc, bg, bq, a, b, c, mk):
    """Index of the rule's target among ``n`` sorted candidates that follow ``bc`` tokens of sums
    ``bg``, ``bq``: the last kept one (L-kinds) or the first removed one (R-kinds); -1 if absent. Also
    the entropies of the prefixes before and through a removed target (NaN when there is none, or no
    token before it)."""
    inclusive = is_inclusive(kind)
    g = bg
    q = bq
    last = -1
    for j in range(n):
        x = s * cand_d[j]
        e = math.exp(-x)
        g_incl = g + e
        q_incl = q + x * e
        if not admitted(kind, bc + j, g, g_incl, q_incl, x, a, b, c, mk):
            before = entropy_of(g, q) if g > 0.0 else math.nan
            return (last if inclusive else j), before, entropy_of(g_incl, q_incl)
        last = j
        g = g_incl
        q = q_incl
    return (last if inclusive else -1), math.nan, math.nan


def tie_walk(count, x, kind, bc, bg, bq, a, b, c, mk):
    """The target's position inside ``count`` tokens of identical gap ``x`` (bisection: the rules are
    monotone along the walk). Returns ``(position, inclusive)``."""
    e = math.exp(-x)
    lo = 0.0
    hi = count
    while lo < hi:
        mid = math.floor((lo + hi) / 2.0)
        if admitted(kind, bc + mid, bg + mid * e, bg + (mid + 1.0) * e, bq + (mid + 1.0) * x * e, x, a, b, c, mk):
            lo = mid + 1.0
        else:
            hi = mid
    if is_inclusive(kind):
        return max(lo - 1.0, 0.0), True
    if lo >= count:
        return count - 1.0, True
    return lo, False


def locate(z, m, s, dt, ilo, ihi, kind, a, b, c, mk, cached, ws):
    """The target token of a prefix rule over the kept set: ``(found, gap, id, inclusive, position,
    before, through)``, the last three from the final walk (see walk; NaN after a tie's bisection): the
    target's 0-based position and the entropies of the prefixes before and through it.

    Narrows a bracket ``(lo, hi]`` of gaps with rounds of pivot sums until it holds few enough tokens
    to sort (or only tokens of one gap), then walks them. ``cached``: the near top of the first round's
    pivots (first_pivots) with which ``ws[4]`` holds this kept set's full scan, which is then that
    round; NOTHING if it holds none.
    """
    acc = ws[0]
    piv = ws[1]
    cand_d = ws[2]
    cand_i = ws[3]
    cache = ws[4]
    npiv = piv.shape[0]
    limit = min(cand_d.shape[0], SORT_LIMIT)
    lo = -1.0
    hi = INF
    bc = 0.0
    bg = 0.0
    bq = 0.0
    first_pivots(piv, s, search_near(kind) if cached == NOTHING else cached)
    sums = kind != K_COUNT  # a search by count needs no exponential (walk takes its candidates' own)
    src = cache
    if cached == NOTHING:
        row_scan(z, m, s, dt, ilo, ihi, lo, hi, npiv, ws, sums)
        src = acc
    nb = src[A_N]
    if nb == 0.0 or not target_below(kind, nb, src[A_G], src[A_Q], a, b, c, mk):
        return False, 0.0, 0, False, math.nan, math.nan, math.nan
    tie = src[A_DMIN] == src[A_DMAX]
    for _ in range(MAX_ROUNDS):
        if nb <= limit or tie:
            break
        # narrow to the pivot interval holding the target; its count comes with the pivot sums
        hit = npiv
        for j in range(npiv):
            k = A_PIV + 3 * j
            if target_below(kind, bc + src[k], bg + src[k + 1], bq + src[k + 2], a, b, c, mk):
                hit = j
                break
        below = 0.0
        if hit > 0:
            k = A_PIV + 3 * (hit - 1)
            below = src[k]
            bc += src[k]
            bg += src[k + 1]
            bq += src[k + 2]
            lo = piv[hit - 1]
        if hit < npiv:
            hi = piv[hit]
            nb = src[A_PIV + 3 * hit] - below
        else:
            nb = nb - below
        if nb <= limit:
            break
        if hi == INF:
            geometric_pivots(piv, lo, s)
        else:
            even_pivots(piv, lo, hi)
        row_scan(z, m, s, dt, ilo, ihi, lo, hi, npiv, ws, sums)
        src = acc
        tie = src[A_DMIN] == src[A_DMAX]
    if not tie or nb <= limit:
        n = row_gather(z, m, dt, ilo, ihi, lo, hi, ws)
        j, before, through = walk(cand_d, n, s, kind, bc, bg, bq, a, b, c, mk)
        if j < 0:  # rounding put the target past the bracket: keep the bracket
            return True, cand_d[n - 1], cand_i[n - 1], True, bc + n - 1.0, math.nan, math.nan
        return True, cand_d[j], cand_i[j], is_inclusive(kind), bc + j, before, through
    dmin = src[A_DMIN]
    position, inclusive = tie_walk(nb, s * dmin, kind, bc, bg, bq, a, b, c, mk)
    return True, dmin, row_nth_tied(z, m, dt, ilo, ihi, dmin, position, ws), inclusive, bc + position, math.nan, math.nan


def as_float32(value):
    return np.float64(np.float32(value))


def cut_prefix(dt, ilo, ihi, d_target, i_target, inclusive):
    """The kept set up to the target token (through it, or before it)."""
    new_ilo = ilo if d_target == dt else 0
    new_ihi = i_target if inclusive else i_target - 1
    return d_target, new_ilo, new_ihi


def cut_gap(dt, ilo, ihi, d_new):
    """Keep every token with a gap ``<= d_new`` (ties included)."""
    if d_new < dt:
        return d_new, 0, ALL_IDS, True
    return dt, ilo, ihi, False


def keep_at_most(z, m, s, dt, ilo, ihi, tau, mk, ties, ws):
    """Keep tokens with ``x <= tau``, and at least the ``mk`` first (with their ties when ``ties``:
    transformers' ``min_tokens_to_keep`` of threshold rules)."""
    if not tau < INF:
        return dt, ilo, ihi, False
    acc = ws[0]
    row_scan(z, m, s, dt, ilo, ihi, -1.0, tau / s, 0, ws, True)
    if acc[A_N] < mk:
        found, d_target, i_target, _, _, _, _ = locate(z, m, s, dt, ilo, ihi, K_COUNT, mk, 0.0, 0.0, mk, NOTHING, ws)
        if not found:  # fewer than mk tokens: all stay
            return dt, ilo, ihi, False
        if ties:
            return cut_gap(dt, ilo, ihi, d_target)
        d_new, ilo_new, ihi_new = cut_prefix(dt, ilo, ihi, d_target, i_target, True)
        return d_new, ilo_new, ihi_new, True
    return cut_gap(dt, ilo, ihi, acc[A_DMAX])


def top_h_rough(z, m, z_min, s, alpha, mk, ws):
    """The paper's Top-H (``alpha < 1``) on a row whose every finite token is still kept, searched from a
    rough scan and certified: ``(certain, dt, ilo, ihi, g, q)``, the last two the rough scan's G and Q
    (at ``s = 1`` as good as row_raw_sums'). The search's bound ``α·H`` comes from sums
    within ROUGH_EPS; its target is then certain when the exact entropy of the prefix through it exceeds
    the bound by more than that error, and that of the prefix before it (unless min_tokens_to_keep alone
    keeps it) falls short by as much: prefix entropies rise with the prefix, so no other token can be the
    target. The search's own walk gives both exactly when the sums below its last bracket are exact:
    those of the near tier's pivots (float64 over its few tokens) and of every later round, so when the
    target lies at or below the first pivot above the tier. Otherwise (or when tokens could have zero
    mass) ``certain`` is false and the exact search runs."""
    piv = ws[1]
    acc = ws[0]
    npiv = piv.shape[0]
    first_pivots(piv, s, NEAR_NATS_SHORT)
    near = row_scan_rough(z, m, z_min, s, npiv, ws)
    g = acc[A_G]
    q = acc[A_Q]
    if acc[A_N] == 0.0 or s * acc[A_DMAX] + math.log(g) >= ZERO_LOG_F64 - 1.0:
        return False, INF, 1, 0, g, q
    error = (ROUGH_EPS + ROUGH_EPS_X * min(s * acc[A_DMAX], ROUGH_X_LIMIT)) * (1.0 + 2.0 * q / g)
    a = alpha * entropy_of(g, q)
    margin = 2.0 * alpha * error
    near_nats = NEAR_NATS_SHORT
    k = A_PIV + 3 * (npiv - 2)  # the tier's top pivot (unless the tier was lowered)
    if near == piv[npiv - 2] and not target_below(K_TOP_H, acc[k], acc[k + 1], acc[k + 2], a, 0.0, 0.0, mk):
        # the target lies past the tier (a flat row): a wider one spares the search's later rounds, each
        # a float64 pass over the row
        first_pivots(piv, s, NEAR_NATS)
        widened = row_widen_near(z, m, s, npiv, ws)
        if widened == piv[npiv - 2]:
            near = widened
            near_nats = NEAR_NATS
        else:
            first_pivots(piv, s, NEAR_NATS_SHORT)
    exact_below = INF  # the first pivot above the tier: a bracket starting below it starts on exact sums
    for j in range(npiv - 1, -1, -1):
        if piv[j] > near:
            exact_below = piv[j]
    keep_scan(acc_size(npiv), ws)
    found, d_target, i_target, inclusive, position, before, through = locate(
        z, m, s, INF, 1, 0, K_TOP_H, a, 0.0, 0.0, mk, near_nats, ws)
    certain = found and (not inclusive) and d_target <= exact_below and position >= mk and through > a + margin
    certain = certain and (position - 1.0 < mk or before <= a - margin)
    if not certain:
        return False, INF, 1, 0, g, q
    dt, ilo, ihi = cut_prefix(INF, 1, 0, d_target, i_target, False)
    return True, dt, ilo, ihi, g, q


def top_p_rough(z, m, z_min, s, p, mk, raw, binned, ws):
    """Top-p (``K_TOP_P`` with ``a = p·G``) on a row whose every finite token is kept, from a rough
    histogram and certified: ``(certain, dt, ilo, ihi, g_raw, q_raw)``, the last two row_raw_sums' when
    ``raw`` (taken by the same read of the row). row_bins_rough gives the tokens up to the bin
    where the mass crosses ``p`` exactly (float64 sums) and those after it roughly: ``G`` is then off by at
    most their error, which only the tail past the target carries (a tenth of the mass for p = 0.9), and
    the walk through the bin decides each token on exact sums (bin_target). When that bound leaves the
    target open (a few rows in a hundred: it assumes every float32 exponential off by its worst, the
    same way), one float64 sum of the row makes ``G`` exact and the walk is tried again, which costs a
    tenth of the exact search. Otherwise, or when the target lies outside the bin, the exact search runs.
    With ``binned``, the histogram is row_max_bins' (at scale ``s``)."""
    found, n, bc, bg, g_through, g_rest, xg_rest, g_raw, q_raw = row_bins_rough(z, m, z_min, s, p, raw, binned, ws)
    if not found:
        return False, INF, 1, 0, g_raw, q_raw
    g = g_through + g_rest
    # the tail's bound, widened for its own rough sums (1e-3), the tokens past the histogram's 128 nats
    # that it leaves massless (each below 2e-38), and float64's rounding of the sums
    error = (ROUGH_EPS_TOKEN * g_rest + ROUGH_EPS_X * xg_rest) * 1.001 + 2e-38 * z.shape[0] + 1e-12 * g
    certain, j = bin_target(ws[2], n, s, bc, bg, p * g, p * error, mk)
    if not certain:
        row_scan(z, m, s, INF, 1, 0, -1.0, INF, 0, ws, True)
        g = ws[0][A_G]
        # at worst, float64's rounding of this sum, of the walk's and of the exact search's (its G and
        # prefix sums), each below n·2^-53·G; the exponentials' own errors lie far below
        error = g * z.shape[0] * 2.0 ** -51
        certain, j = bin_target(ws[2], n, s, bc, bg, p * g, p * error, mk)
    if not certain:
        return False, INF, 1, 0, g_raw, q_raw
    dt, ilo, ihi = cut_prefix(INF, 1, 0, ws[2][j], ws[3][j], True)
    return True, dt, ilo, ihi, g_raw, q_raw


def bin_target(cand_d, n, s, bc, bg, a, margin, mk):
    """The walk through top_p_rough's bin (``n`` tokens sorted by gap, after ``bc`` tokens of mass ``bg``)
    to the token where the mass reaches ``a``, known to within ``margin``: ``(certain, j)``. The target
    is certain when it is kept (the mass before it below ``a`` by more than the margin, or within
    min_tokens_to_keep) and the next token is not (the mass through the target above ``a`` by as much):
    both then hold for any ``a`` in the margin's range."""
    g_before = bg
    for j in range(n):
        position = bc + j
        if not (position < mk or g_before < a - margin):
            return False, 0
        g_before += math.exp(-s * cand_d[j])
        if position + 1.0 >= mk and g_before >= a + margin:
            return True, j
    return False, 0


def keep_prefix(z, m, s, dt, ilo, ihi, kind, a, b, c, mk, cached, ws):
    """Apply a prefix rule: ``(dt, ilo, ihi, changed)``."""
    found, d_target, i_target, inclusive, _, _, _ = locate(z, m, s, dt, ilo, ihi, kind, a, b, c, mk, cached, ws)
    if not found:
        return dt, ilo, ihi, False
    d_new, ilo_new, ihi_new = cut_prefix(dt, ilo, ihi, d_target, i_target, inclusive)
    return d_new, ilo_new, ihi_new, True


def adapts_temperature(op):
    """Whether ``op`` sets the temperature from the entropy of what it is given."""
    return op == DYNATEMP or op == EDT or op == HAPO


def temperature_as_read(t, mode):
    """A fixed temperature as the chain applies it: as float32 when the reference divides float32 logits
    by float32(T)."""
    return as_float32(t) if mode & FLOAT32_PARAMS else t


def top_p_scale(ops, prm, mode):
    """The scale at which the chain's first rule is top-p, when only fixed temperatures come before it (as
    run_row scales them), else 0."""
    s = 1.0
    for j in range(ops.shape[0]):
        if ops[j] == TOP_P:
            return s
        if ops[j] != TEMPERATURE:
            return 0.0
        t = temperature_as_read(prm[j][0], mode)
        if not t >= MIN_TEMPERATURE:
            return 0.0
        s = min(s / t, MAX_SCALE)
    return 0.0


def run_row(z, ops, prm, seed_step_key, out, tel, mode, limit, ws):
    """Apply the program ``ops``/``prm`` to one row of logits ``z``; fill ``tel`` and, in WRITE mode,
    ``out``."""
    for k in range(tel.shape[0]):
        tel[k] = math.nan
    s_binned = top_p_scale(ops, prm, mode) if ROUGH_SCANS else 0.0
    if s_binned > 0.0:  # the chain opens with top-p (after fixed temperatures): its histogram finds the max too
        m, n_finite, z_min, binned, g_ahead, q_ahead = row_max_bins(z, s_binned, (mode & TELEMETRY) != 0, ws)
    else:
        m, n_finite, z_min = row_max(z, ws)
        binned = False
        g_ahead = q_ahead = math.nan
    if n_finite == 0:
        # nothing can be drawn: token 0 (an index that is safe to use) with log-probability -inf, flagged
        # by the status
        tel[T_STATUS] = STATUS_EMPTY
        tel[T_TOKEN] = 0.0
        tel[T_KEPT] = 0.0
        tel[T_LOGP_AFTER] = -math.inf
        if mode & WRITE:
            row_write(z, m, 1.0, -1.0, 1, 0, 0.0, limit, out, ws)
        return
    tel[T_STATUS] = 0.0
    cache = ws[4]
    s = 1.0
    dt = INF
    ilo = 1
    ihi = 0
    t_total = 1.0
    summed = False  # ws[4] holds the kept set's sums at scale s
    cached = NOTHING  # ... and the pivot sums of a search's first round up to this near top (first_pivots)
    g_raw = 1.0
    q_raw = 0.0
    raw_due = False  # the raw row's sums are still to be taken (by top-p's histogram pass, or at the end)
    if mode & TELEMETRY:
        first = first_rule(ops)
        if g_ahead == g_ahead:  # row_max_bins took them (not NaN)
            g_raw = g_ahead
            q_raw = q_ahead
        elif ROUGH_SCANS and (first == TOP_P or first == TOP_H):
            # top-p's histogram pass, or Top-H's rough scan at T = 1, takes the raw sums in its own read of
            # the row (top_p_rough, top_h_rough): a float64 scan would serve only a search that they
            # mostly spare
            raw_due = True
        elif (ops.shape[0] > 0 and ops[0] == TEMPERATURE and prm[0][0] != 1.0) or first == MIN_P or (
                first == TOP_K or first == TOP_H_HF):
            # the scale changes at once, or the rule reads only the few tokens it keeps (min-p's bounded
            # scan) or counts them (a count scan needs no sums): a float64 scan of the whole row at T = 1
            # would serve nothing downstream, so sums alone
            g_raw, q_raw = row_raw_sums(z, m, ws)
        else:
            if ops.shape[0] > 0 and adapts_temperature(ops[0]):  # its temperature will change the scale too
                scan_sums(z, m, s, dt, ilo, ihi, ws)
            else:
                cached = scan_near(first_rule(ops))
                scan_all(z, m, s, dt, ilo, ihi, cached, ws)
            summed = True
            g_raw = cache[A_G]
            q_raw = cache[A_Q]
    for j in range(ops.shape[0]):
        op = ops[j]
        p = prm[j]
        t = -1.0
        if op == TEMPERATURE:
            t = p[0]
        elif adapts_temperature(op):
            if not summed:
                scan_sums(z, m, s, dt, ilo, ihi, ws)
                summed = True
            h = entropy_of(cache[A_G], cache[A_Q])
            tel[FIXED + 2 * j + 1] = h
            if op == DYNATEMP:
                t = dynatemp_temperature(cache[A_N], h, p[0], p[1], p[2])
            elif op == EDT:
                t = edt_temperature(h, p[0], p[1], p[2])
            else:
                t = hapo_temperature(h, p[0], p[1], p[2], p[3], p[4], p[5], p[6])
        if t >= 0.0:
            t = temperature_as_read(t, mode)
            tel[FIXED + 2 * j] = t
            t_total *= t
            if t >= MIN_TEMPERATURE:
                scaled = min(s / t, MAX_SCALE)
                if scaled != s:  # T = 1 changes nothing: a scan made before it still holds
                    summed = False
                    cached = NOTHING
                s = scaled
            else:  # greedy: the first most likely kept token
                summed = False
                cached = NOTHING
                first = row_nth_tied(z, m, dt, ilo, ihi, 0.0, 0.0, ws)
                dt = 0.0
                ilo = first
                ihi = first
            continue
        mk = p[1]
        changed = False
        if op == MIN_P:
            if p[0] > 0.0:
                dt, ilo, ihi, changed = keep_at_most(z, m, s, dt, ilo, ihi, -math.log(p[0]), mk, True, ws)
        elif op == TOP_K:
            if p[0] > 0.0:
                found, d_target, _, _, _, _, _ = locate(z, m, s, dt, ilo, ihi, K_COUNT, max(p[0], mk), 0.0, 0.0, mk, cached,
                                                        ws)
                if found:
                    dt, ilo, ihi, changed = cut_gap(dt, ilo, ihi, d_target)
        else:
            if op == TOP_H_HF:
                dt, ilo, ihi, changed = keep_prefix(z, m, s, dt, ilo, ihi, K_COUNT, HF_CANDIDATES, 0.0, 0.0, mk, cached, ws)
                cached = NOTHING if changed else cached
            if ROUGH_SCANS and op == TOP_H and p[0] < 1.0 and cached == NOTHING and dt == INF and ilo > ihi:
                certain, dt_rough, ilo_rough, ihi_rough, g_r, q_r = top_h_rough(z, m, z_min, s, p[0], mk, ws)
                if raw_due and s == 1.0:
                    g_raw, q_raw, raw_due = g_r, q_r, False
                if certain:
                    dt, ilo, ihi = dt_rough, ilo_rough, ihi_rough
                    summed = False
                    continue
            if ROUGH_SCANS and op == TOP_P and cached == NOTHING and dt == INF and ilo > ihi:
                certain, dt_rough, ilo_rough, ihi_rough, g_r, q_r = top_p_rough(z, m, z_min, s, p[0], mk, raw_due,
                                                                                binned and s == s_binned, ws)
                binned = False
                if raw_due:
                    g_raw, q_raw, raw_due = g_r, q_r, False
                if certain:
                    dt, ilo, ihi = dt_rough, ilo_rough, ihi_rough
                    summed = False
                    continue
            if cached == NOTHING:
                cached = scan_near(op)
                scan_all(z, m, s, dt, ilo, ihi, cached, ws)
                summed = True
            n = cache[A_N]
            g = cache[A_G]
            h = entropy_of(g, cache[A_Q])
            epsilon = as_float32(p[0]) if mode & FLOAT32_PARAMS else p[0]
            if op == EPSILON:
                if epsilon > 0.0:
                    dt, ilo, ihi, changed = keep_at_most(z, m, s, dt, ilo, ihi, -math.log(epsilon) - math.log(g), mk, True, ws)
            elif op == ETA:
                if epsilon > 0.0:
                    eta = min(epsilon, math.sqrt(epsilon) * math.exp(-h))
                    dt, ilo, ihi, changed = keep_at_most(z, m, s, dt, ilo, ihi, -math.log(eta) - math.log(g), mk, True, ws)
            elif op == TOP_N_SIGMA:
                mean = cache[A_SX] / n
                sigma = math.sqrt(max(cache[A_SXX] / n - mean * mean, 0.0))
                dt, ilo, ihi, changed = keep_at_most(z, m, s, dt, ilo, ihi, p[0] * sigma, mk, True, ws)
            elif op == TOP_P:
                dt, ilo, ihi, changed = keep_prefix(z, m, s, dt, ilo, ihi, K_TOP_P, p[0] * g, 0.0, 0.0, mk, cached, ws)
            else:  # Top-H: tokens of zero probability are never kept (float32 zero for transformers' rule)
                log_g = math.log(g)
                zero_log = ZERO_LOG_F64 if op == TOP_H else ZERO_LOG_F32
                if s * cache[A_DMAX] + log_g >= zero_log:
                    dt, ilo, ihi, changed = keep_at_most(z, m, s, dt, ilo, ihi, zero_log - log_g, mk, False, ws)
                    cached = NOTHING if changed else cached
                if op == TOP_H:
                    bound = p[0] * h if p[0] < 1.0 else INF
                    dt, ilo, ihi, cut = keep_prefix(z, m, s, dt, ilo, ihi, K_TOP_H, bound, 0.0, 0.0, mk, cached, ws)
                else:
                    dt, ilo, ihi, cut = keep_prefix(z, m, s, dt, ilo, ihi, K_HF, p[0] * h, log_g, g, mk, cached, ws)
                changed = changed or cut
        if changed:
            summed = False
            cached = NOTHING
    if raw_due:  # no top-p took them
        g_raw, q_raw = row_raw_sums(z, m, ws)
    if mode & TELEMETRY:
        tel[T_H_BEFORE] = entropy_of(g_raw, q_raw)
    tel[T_TEMPERATURE] = t_total
    if mode & (DRAW | TELEMETRY):
        want = (mode & DRAW) != 0
        token, n_after, g_after, q_after = row_draw(z, m, s, dt, ilo, ihi, seed_step_key, want, ws)
        tel[T_KEPT] = n_after
        tel[T_H_AFTER] = entropy_of(g_after, q_after)
        if want:
            d_token = m - z[token]
            tel[T_TOKEN] = token
            tel[T_LOGP_AFTER] = -s * d_token - math.log(g_after)
            if mode & TELEMETRY:
                tel[T_LOGP_BEFORE] = -d_token - math.log(g_raw)
    if mode & WRITE:
        shift = m if s * max(abs(m), abs(z_min)) > limit else 0.0
        row_write(z, m, s, dt, ilo, ihi, shift, limit, out, ws)
