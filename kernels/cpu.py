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
from .compile import instantiate
from .rng import race_score, step_key, token_uniform
from .row_program import A_DMAX, A_DMIN, A_G, A_N, A_PIV, A_Q, A_SX, A_SXX, acc_size, run_row

PIVOTS = 8  # pivots per search round: compares are cheap here


def kept(d, i, dt, ilo, ihi):
    return d < dt or (d == dt and ilo <= i and i <= ihi)


def row_max(z, ws):
    m = -math.inf
    lowest = math.inf
    n = 0
    for i in range(z.shape[0]):
        v = z[i]
        if v > -math.inf and v < math.inf:
            n += 1
            m = max(m, v)
            lowest = min(lowest, v)
    return np.float64(m), n, np.float64(lowest)


def row_scan(z, m, s, dt, ilo, ihi, lo, hi, npiv, ws):
    acc = ws[0]
    piv = ws[1]
    for k in range(A_PIV + 3 * npiv):
        acc[k] = 0.0
    n = 0.0
    g = 0.0
    q = 0.0
    sx = 0.0
    sxx = 0.0
    dmin = math.inf
    dmax = -math.inf
    for i in range(z.shape[0]):
        d = m - z[i]
        if not (d > lo and d <= hi and kept(d, i, dt, ilo, ihi)):
            continue
        x = s * d
        e = math.exp(-x)
        n += 1.0
        g += e
        q += x * e
        sx += x
        sxx += x * x
        dmin = min(dmin, d)
        dmax = max(dmax, d)
        for j in range(npiv):
            if d <= piv[j]:
                k = A_PIV + 3 * j
                acc[k] += 1.0
                acc[k + 1] += e
                acc[k + 2] += x * e
                break
    # per-pivot sums were stored per bucket; make them cumulative
    for j in range(1, npiv):
        k = A_PIV + 3 * j
        acc[k] += acc[k - 3]
        acc[k + 1] += acc[k - 2]
        acc[k + 2] += acc[k - 1]
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
    tmp_d = ws[5]
    tmp_i = ws[6]
    n = 0
    for i in range(z.shape[0]):
        d = m - z[i]
        if d > lo and d <= hi and kept(d, i, dt, ilo, ihi):
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
        d = m - z[i]
        if d == dval and kept(d, i, dt, ilo, ihi):
            if count == j:
                return i
            count += 1.0
    return -1


def row_draw(z, m, s, dt, ilo, ihi, key, want, ws):
    n = 0.0
    g = 0.0
    q = 0.0
    best = -math.inf
    token = -1
    for i in range(z.shape[0]):
        d = m - z[i]
        if not kept(d, i, dt, ilo, ihi):
            continue
        x = s * d
        e = math.exp(-x)
        n += 1.0
        g += e
        q += x * e
        if want:
            score = race_score(-x, token_uniform(key, i))
            if score > best or token < 0:
                best = score
                token = i
    return token, n, g, q


def row_write(z, m, s, dt, ilo, ihi, shift, limit, out, ws):
    for i in range(z.shape[0]):
        d = m - z[i]
        if kept(d, i, dt, ilo, ihi):
            out[i] = min(max(s * (z[i] - shift), -limit), limit)
        else:
            out[i] = -math.inf


def run_chain(z, ops, prm, keys, out, tel, mode, limit, threads):
    """Apply the program to every row of ``z`` (``[batch, vocab]``) on ``threads`` threads (Numba's
    count, passed in: reading it here would keep the function out of the cache); see
    :mod:`entrodec.kernels.program`."""
    batch, vocab = z.shape
    npiv = PIVOTS
    size = acc_size(npiv)
    accs = np.empty((threads, size))
    pivs = np.empty((threads, npiv))
    caches = np.empty((threads, size))
    cand_d = np.empty((threads, vocab))
    cand_i = np.empty((threads, vocab), dtype=np.int64)
    tmp_d = np.empty((threads, vocab))
    tmp_i = np.empty((threads, vocab), dtype=np.int64)
    writes = out.shape[0] == batch
    for b in prange(batch):
        t = numba.get_thread_id()
        ws = (accs[t], pivs[t], cand_d[t], cand_i[t], caches[t], tmp_d[t], tmp_i[t])
        key = step_key(keys[b, 0], keys[b, 1])
        run_row(z[b], ops, prm[b], key, out[b] if writes else out[0], tel[b], mode, limit, ws)


def _decorate(function):
    if function.__name__ == "run_chain":
        return numba.njit(parallel=True, cache=True)(function)
    return numba.njit(cache=True)(function)


COMPILED = instantiate([rules, rng, program, row_program, sys.modules[__name__]], _decorate)
