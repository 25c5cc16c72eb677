"""The CPU backend: the row passes as sequential loops, rows in parallel (``prange``), compiled with
``njit(cache=True)`` so that compilation happens once per machine.

Import cost: nothing compiles at import; the first call of :func:`run_chain` loads the cached machine
code (or compiles it, tens of seconds, on a machine that has no cache yet).
"""

from __future__ import annotations

import math
import sys

import numba
import numpy as np
from numba import prange

from . import program, rng, row_program, rules
from .cache import kernel_cache_dir, numba_cache_in
from .compile import instantiate
from .rng import race_score, step_key, token_uniform
from .row_program import A_DMAX, A_DMIN, A_G, A_N, A_PIV, A_Q, A_SX, A_SXX, acc_size, run_row

PIVOTS = 4  # pivots per search round: four sets of sums fit in vector registers
PAD = 16  # float64s: two cache lines between threads' work arrays
CHUNK = 256  # tokens per vectorised stage: the chunk buffers stay in L1

# exp(-x) = 2^-k · e^r with k = round(x / ln 2), |r| <= ln2/2, e^r by its Taylor polynomial (degree 12:
# relative error < 1e-14). Written so that LLVM vectorises it; libm's exp would not be.
LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
ROUND_MAGIC = 6755399441055744.0  # 1.5 · 2^52: adding and subtracting it rounds to an integer
EXP_BIAS = 4503599627370496.0 + 1023.0  # 2^52 + 1023: the float whose low bits hold the exponent bias
EXP_LIMIT = 700.0  # e^-700 ≈ 1e-304: beyond it a token adds nothing a float64 sum can hold

# Work arrays of one thread (``ws``): 0-4 as row_program describes; then
TMP_D, TMP_I = 5, 6                         # gather scratch
GAPS, XS, ES, SCALES, IDS = 7, 8, 9, 10, 11  # one chunk's stages (ids as float64, exact)
HIST = 12                                   # per-pivot sums
LIST_D, LIST_I, LIST_E, LIST_META = 13, 14, 15, 16
# The token list: after the row's first full scan, every kept token's gap, id and e^-x (for the scale
# it was recorded at), compacted whenever a scan's range shrinks. Passes that it covers read it instead
# of the row and skip the exponentials: the whole chain computes them about once.
META_VALID, META_TOP, META_SCALE, META_COUNT = 0, 1, 2, 3


def chunk_from_row(z, start, count, m, s, dt, ilo, ihi, lo, hi, gaps, xs):
    """Gaps ``d`` of row tokens ``start...``, and ``x = s·d`` where the token is kept and
    ``lo < d <= hi``, else inf; returns how many are."""
    inside_count = 0
    for j in range(count):
        i = start + j
        d = m - np.float64(z[i])
        inside = (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi)))
        gaps[j] = d
        xs[j] = s * d if inside else math.inf
        inside_count += 1 if inside else 0
    return inside_count


def chunk_from_list(list_d, list_i, list_e, start, count, s, dt, ilo, ihi, lo, hi, gaps, xs, es, ids):
    """The same for entries ``start...`` of the token list, with their recorded ``e^-x``."""
    inside_count = 0
    for j in range(count):
        d = list_d[start + j]
        i = list_i[start + j]
        inside = (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi)))
        gaps[j] = d
        ids[j] = i
        xs[j] = s * d if inside else math.inf
        es[j] = list_e[start + j] if inside else 0.0
        inside_count += 1 if inside else 0
    return inside_count


def chunk_exp(xs, es, scales, count):
    """``es = exp(-xs)`` (0 where ``x`` is inf or beyond EXP_LIMIT)."""
    bits = scales.view(np.int64)
    for j in range(count):
        x = min(xs[j], EXP_LIMIT)
        k = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC
        r = (k * LN2_HI - x) + k * LN2_LO
        es[j] = 1.0 + r * (1.0 + r * (0.5 + r * (1.6666666666666666e-01 + r * (4.1666666666666664e-02 + r * (
            8.3333333333333332e-03 + r * (1.3888888888888889e-03 + r * (1.9841269841269841e-04 + r * (
                2.4801587301587302e-05 + r * (2.7557319223985893e-06 + r * (2.7557319223985888e-07 + r * (
                    2.5052108385441720e-08 + r * 2.0876756987868100e-09)))))))))))
        scales[j] = EXP_BIAS - k  # its low bits hold 1023 - k, the biased exponent of 2^-k
    for j in range(count):
        bits[j] = bits[j] << 52
    for j in range(count):
        es[j] = es[j] * scales[j] if xs[j] <= EXP_LIMIT else 0.0


def chunk_sums(gaps, xs, es, count):
    """Count, G, Q, Σx, Σx², min and max gap of the chunk's tokens with finite ``x``."""
    n = 0.0
    g = 0.0
    q = 0.0
    sx = 0.0
    sxx = 0.0
    for j in range(count):
        x = xs[j]
        inside = x < math.inf
        xi = x if inside else 0.0
        n += 1.0 if inside else 0.0
        g += es[j]
        q += xi * es[j]
        sx += xi
        sxx += xi * xi
    dmin = math.inf
    dmax = -math.inf
    for j in range(count):  # a loop of its own: with the sums above it would not vectorise
        inside = xs[j] < math.inf
        dmin = min(dmin, gaps[j] if inside else math.inf)
        dmax = max(dmax, gaps[j] if inside else -math.inf)
    return n, g, q, sx, sxx, dmin, dmax


def chunk_pivots(gaps, xs, es, count, piv, hist):
    """Add the chunk's sums over tokens with ``d <= piv[k]`` to ``hist[3k:3k+3]``, for every pivot (one
    short loop per pivot: each vectorises)."""
    for k in range(PIVOTS):
        p = piv[k]
        n = 0.0
        g = 0.0
        q = 0.0
        for j in range(count):
            below = (xs[j] < math.inf) & (gaps[j] <= p)
            n += 1.0 if below else 0.0
            g += es[j] if below else 0.0
            q += xs[j] * es[j] if below else 0.0
        hist[3 * k] += n
        hist[3 * k + 1] += g
        hist[3 * k + 2] += q


def list_covers(ws, dt, hi):
    """Whether the token list holds every kept token with ``d <= hi`` (kept tokens all have ``d <= dt``:
    the rules only ever shrink the kept set)."""
    meta = ws[LIST_META]
    return (meta[META_VALID] == 1.0) & (min(hi, dt) <= meta[META_TOP])


def list_rescale(s, ws):
    """Recompute the list's ``e^-x`` for a new scale (after a temperature)."""
    meta = ws[LIST_META]
    if meta[META_SCALE] == s:
        return
    list_d = ws[LIST_D]
    list_e = ws[LIST_E]
    xs = ws[XS]
    es = ws[ES]
    total = int(meta[META_COUNT])
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        for j in range(count):
            xs[j] = s * list_d[start + j]
        chunk_exp(xs, es, ws[SCALES], count)
        for j in range(count):
            list_e[start + j] = es[j]
    meta[META_SCALE] = s


def list_compact(top, ws):
    """Drop list entries with ``d > top`` (in place, order kept)."""
    meta = ws[LIST_META]
    list_d = ws[LIST_D]
    list_i = ws[LIST_I]
    list_e = ws[LIST_E]
    kept = 0
    for j in range(int(meta[META_COUNT])):
        if list_d[j] <= top:
            list_d[kept] = list_d[j]
            list_i[kept] = list_i[j]
            list_e[kept] = list_e[j]
            kept += 1
    meta[META_COUNT] = kept
    meta[META_TOP] = top


def row_max(z, ws):
    ws[LIST_META][META_VALID] = 0.0  # a new row: the list belongs to another
    m = -math.inf
    lowest = math.inf
    n = 0
    for i in range(z.shape[0]):
        v = np.float64(z[i])
        finite = (v > -math.inf) & (v < math.inf)
        n += 1 if finite else 0
        m = max(m, v if finite else -math.inf)
        lowest = min(lowest, v if finite else math.inf)
    return m, n, lowest


def row_scan(z, m, s, dt, ilo, ihi, lo, hi, npiv, ws):
    """Sums over kept tokens in ``(lo, hi]`` (see row_program), from the token list when it covers the
    range (compacting it to the range's top), else from the row (recording the list when ``lo`` is
    below every gap)."""
    acc = ws[0]
    piv = ws[1]
    hist = ws[HIST]
    gaps = ws[GAPS]
    ids = ws[IDS]
    xs = ws[XS]
    es = ws[ES]
    list_d = ws[LIST_D]
    list_i = ws[LIST_I]
    list_e = ws[LIST_E]
    meta = ws[LIST_META]
    for k in range(3 * PIVOTS):
        hist[k] = 0.0
    top = min(hi, dt)
    from_list = list_covers(ws, dt, hi)
    if from_list:
        list_rescale(s, ws)
        if top < meta[META_TOP]:
            list_compact(top, ws)
    record = (not from_list) & (lo < 0.0)
    total = int(meta[META_COUNT]) if from_list else z.shape[0]
    n = 0.0
    g = 0.0
    q = 0.0
    sx = 0.0
    sxx = 0.0
    dmin = math.inf
    dmax = -math.inf
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        if from_list:
            inside = chunk_from_list(list_d, list_i, list_e, start, count, s, dt, ilo, ihi, lo, hi, gaps, xs, es, ids)
        else:
            inside = chunk_from_row(z, start, count, m, s, dt, ilo, ihi, lo, hi, gaps, xs)
            if inside > 0:
                chunk_exp(xs, es, ws[SCALES], count)
            if record:
                for j in range(count):
                    list_d[start + j] = gaps[j] if xs[j] < math.inf else math.inf
                    list_i[start + j] = start + j
                    list_e[start + j] = es[j] if xs[j] < math.inf else 0.0
        if inside == 0:
            continue
        cn, cg, cq, csx, csxx, cmin, cmax = chunk_sums(gaps, xs, es, count)
        n += cn
        g += cg
        q += cq
        sx += csx
        sxx += csxx
        dmin = min(dmin, cmin)
        dmax = max(dmax, cmax)
        if npiv > 0:
            chunk_pivots(gaps, xs, es, count, piv, hist)
    if record:
        meta[META_VALID] = 1.0
        meta[META_TOP] = top
        meta[META_SCALE] = s
        meta[META_COUNT] = z.shape[0]
    for k in range(3 * npiv):
        acc[A_PIV + k] = hist[k]
    acc[A_N] = n
    acc[A_G] = g
    acc[A_Q] = q
    acc[A_SX] = sx
    acc[A_SXX] = sxx
    acc[A_DMIN] = dmin
    acc[A_DMAX] = dmax


def row_gather(z, m, dt, ilo, ihi, lo, hi, ws):
    cand_d = ws[2]
    cand_i = ws[3]
    tmp_d = ws[TMP_D]
    tmp_i = ws[TMP_I]
    n = 0
    if list_covers(ws, dt, hi):
        list_d = ws[LIST_D]
        list_i = ws[LIST_I]
        for j in range(int(ws[LIST_META][META_COUNT])):
            d = list_d[j]
            i = list_i[j]
            if (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))):
                tmp_d[n] = d
                tmp_i[n] = int(i)
                n += 1
    else:
        for i in range(z.shape[0]):
            d = m - np.float64(z[i])
            if (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))):
                tmp_d[n] = d
                tmp_i[n] = i
                n += 1
    order = np.argsort(tmp_d[:n], kind="mergesort")  # stable: ties stay in id order
    for j in range(n):
        cand_d[j] = tmp_d[order[j]]
        cand_i[j] = tmp_i[order[j]]
    return n


def row_nth_tied(z, m, dt, ilo, ihi, dval, j, ws):
    count = 0.0
    for i in range(z.shape[0]):
        d = m - np.float64(z[i])
        if d == dval and ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))):
            if count == j:
                return i
            count += 1.0
    return -1


def row_draw(z, m, s, dt, ilo, ihi, key, want, ws):
    """Sums of the kept set and the exponential race over it, from the token list when it covers the
    kept set."""
    gaps = ws[GAPS]
    ids = ws[IDS]
    xs = ws[XS]
    es = ws[ES]
    from_list = list_covers(ws, dt, math.inf)
    if from_list:
        list_rescale(s, ws)
        if dt < ws[LIST_META][META_TOP]:
            list_compact(dt, ws)
    total = int(ws[LIST_META][META_COUNT]) if from_list else z.shape[0]
    n = 0.0
    g = 0.0
    q = 0.0
    best = -math.inf
    weight = math.inf  # e^-best: a token can only win if E < e^-x · e^-best
    token = -1
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        if from_list:
            inside = chunk_from_list(ws[LIST_D], ws[LIST_I], ws[LIST_E], start, count, s, dt, ilo, ihi, -1.0, math.inf,
                                     gaps, xs, es, ids)
        else:
            inside = chunk_from_row(z, start, count, m, s, dt, ilo, ihi, -1.0, math.inf, gaps, xs)
            for j in range(count):
                ids[j] = start + j
            if inside > 0:
                chunk_exp(xs, es, ws[SCALES], count)
        if inside == 0:
            continue
        cn, cg, cq, _, _, _, _ = chunk_sums(gaps, xs, es, count)
        n += cn
        g += cg
        q += cq
        if want:
            for j in range(count):
                if xs[j] < math.inf:
                    i = int(ids[j])
                    u = token_uniform(key, i)
                    # E = -ln u < a needs u > e^-a >= 1 - a: most tokens fail this without a logarithm
                    a = es[j] * weight
                    if u > 1.0 - a * 1.000001 - 1e-15:
                        score = race_score(-xs[j], u)
                        if score > best or (score == best and i < token) or token < 0:
                            best = score
                            weight = math.exp(-best)
                            token = i
    return token, n, g, q


def row_write(z, m, s, dt, ilo, ihi, shift, limit, out, ws):
    for i in range(z.shape[0]):
        v = np.float64(z[i])
        d = m - v
        inside = (d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))
        out[i] = min(max(s * (v - shift), -limit), limit) if inside else -math.inf


def run_chain(z, ops, prm, keys, out, tel, mode, limit, threads):
    """Apply the program to every row of ``z`` (``[batch, vocab]``) on ``threads`` threads (Numba's
    count, passed in: reading it here would keep the function out of the cache); see
    :mod:`entrodec.kernels.program`."""
    batch, vocab = z.shape
    npiv = PIVOTS
    size = acc_size(npiv)
    stride = size + PAD  # one thread's small arrays never share a cache line with another's
    accs = np.empty((threads, stride))
    pivs = np.empty((threads, npiv + PAD))
    caches = np.empty((threads, stride))
    cand_d = np.empty((threads, vocab + PAD))
    cand_i = np.empty((threads, vocab + PAD), dtype=np.int64)
    tmp_d = np.empty((threads, vocab + PAD))
    tmp_i = np.empty((threads, vocab + PAD), dtype=np.int64)
    chunks = np.empty((threads, 5, CHUNK + PAD))
    hists = np.empty((threads, 3 * npiv + PAD))
    list_d = np.empty((threads, vocab + PAD))
    list_i = np.empty((threads, vocab + PAD))
    list_e = np.empty((threads, vocab + PAD))
    metas = np.empty((threads, 4 + PAD))
    writes = out.shape[0] == batch
    for b in prange(batch):
        t = numba.get_thread_id()
        ws = (accs[t, :size], pivs[t, :npiv], cand_d[t, :vocab], cand_i[t, :vocab], caches[t, :size], tmp_d[t, :vocab],
              tmp_i[t, :vocab], chunks[t, 0, :CHUNK], chunks[t, 1, :CHUNK], chunks[t, 2, :CHUNK], chunks[t, 3, :CHUNK],
              chunks[t, 4, :CHUNK], hists[t, :3 * npiv], list_d[t, :vocab], list_i[t, :vocab], list_e[t, :vocab],
              metas[t, :4])
        key = step_key(keys[b, 0], keys[b, 1])
        run_row(z[b], ops, prm[b], key, out[b] if writes else out[0], tel[b], mode, limit, ws)


# Reassociation lets LLVM vectorise the reductions; logits are never NaN, but nothing may assume away
# inf (masked tokens).
_FASTMATH = {"chunk_sums": {"reassoc", "contract", "nsz", "nnan"}, "row_max": {"reassoc", "nsz", "nnan"},
             "chunk_pivots": {"reassoc", "contract", "nsz", "nnan"},
             "chunk_from_row": {"contract"}, "chunk_from_list": {"contract"}, "chunk_exp": {"contract"}}


def _decorate(function):
    # error_model="numpy": IEEE arithmetic (inf, nan) as on the GPU, never a Python ZeroDivisionError
    if function.__name__ == "run_chain":
        return numba.njit(parallel=True, cache=True, error_model="numpy")(function)
    return numba.njit(cache=True, error_model="numpy", fastmath=_FASTMATH.get(function.__name__, False))(function)


_SOURCES = [rules, rng, program, row_program, sys.modules[__name__]]
with numba_cache_in(kernel_cache_dir(_SOURCES)):
    COMPILED = instantiate(_SOURCES, _decorate)
