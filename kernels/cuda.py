"""The CUDA backend: one thread block per row, the row passes as block-strided loops with shared-memory
reductions (no warp shuffles, so that Numba's CUDA simulator runs the very same kernel in CI), the
whole chain in one launch on torch's current stream.

Import this module only when a GPU (or ``NUMBA_ENABLE_CUDASIM=1``) is in use; the kernel compiles on
its first launch (and is cached on disk on a real GPU).
"""

from __future__ import annotations

import math
import sys

import numba
import numpy as np
from numba import cuda

from . import program, rng, row_program, rules
from .compile import instantiate
from .rng import race_score, step_key, token_uniform
from .row_program import A_DMAX, A_DMIN, A_G, A_N, A_PIV, A_Q, A_SX, A_SXX, acc_size, run_row

SIMULATED = bool(numba.config.ENABLE_CUDASIM)
THREADS = 16 if SIMULATED else 256  # the simulator runs each thread as a Python thread
PIVOTS = 4
SLOTS = acc_size(PIVOTS)  # values reduced across the block by one scan
CAP = 64 if SIMULATED else 512  # gathered candidates sorted in shared memory (a power of two)
ROUGH_SCANS = False  # row_program.top_h_rough: a block's float64 exponentials are cheap, certifying is not
NO_ID = 1 << 62

# Work arrays (``ws``): 0-4 as row_program describes; then
RED, COUNTER, VALUES = 5, 6, 7  # shared reduction rows, shared gather counter, per-thread partial sums


def inside_kept(d, i, dt, ilo, ihi, lo, hi):
    return d > lo and d <= hi and (d < dt or (d == dt and ilo <= i and i <= ihi))


def block_reduce(ws, count):
    """Reduce each thread's ``ws[VALUES][:count]`` over the block into ``ws[0]`` (slot A_DMIN by min,
    A_DMAX by max, every other by sum); every thread then reads the result."""
    red = ws[RED]
    values = ws[VALUES]
    acc = ws[0]
    tid = cuda.threadIdx.x
    cuda.syncthreads()  # everyone has read the previous result
    for k in range(count):
        red[k, tid] = values[k]
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            for k in range(count):
                a = red[k, tid]
                b = red[k, tid + stride]
                if k == A_DMIN:
                    red[k, tid] = min(a, b)
                elif k == A_DMAX:
                    red[k, tid] = max(a, b)
                else:
                    red[k, tid] = a + b
        cuda.syncthreads()
        stride //= 2
    if tid == 0:
        for k in range(count):
            acc[k] = red[k, 0]
    cuda.syncthreads()


def row_max(z, ws):
    values = ws[VALUES]
    m = -math.inf
    lowest = math.inf
    n = 0.0
    for i in range(cuda.threadIdx.x, z.shape[0], THREADS):
        v = np.float64(z[i])
        if v > -math.inf and v < math.inf:
            n += 1.0
            m = max(m, v)
            lowest = min(lowest, v)
    for k in range(A_DMAX + 1):
        values[k] = 0.0
    values[A_N] = n
    values[A_DMIN] = lowest
    values[A_DMAX] = m
    block_reduce(ws, A_DMAX + 1)
    acc = ws[0]
    return acc[A_DMAX], int(acc[A_N]), acc[A_DMIN]


def row_scan(z, m, s, dt, ilo, ihi, lo, hi, npiv, ws, sums):  # sums: always (a block's exponentials are cheap)
    values = ws[VALUES]
    piv = ws[1]
    # the four pivots' sums are scalars: a local array indexed in the loop would live in local memory
    p0 = piv[0] if npiv > 0 else -math.inf
    p1 = piv[1] if npiv > 1 else -math.inf
    p2 = piv[2] if npiv > 2 else -math.inf
    p3 = piv[3] if npiv > 3 else -math.inf
    n = g = q = sx = sxx = 0.0
    n0 = g0 = q0 = n1 = g1 = q1 = n2 = g2 = q2 = n3 = g3 = q3 = 0.0
    dmin = math.inf
    dmax = -math.inf
    for i in range(cuda.threadIdx.x, z.shape[0], THREADS):
        d = m - np.float64(z[i])
        if inside_kept(d, i, dt, ilo, ihi, lo, hi):
            x = s * d
            e = math.exp(-x)
            xe = x * e
            n += 1.0
            g += e
            q += xe
            sx += x
            sxx += x * x
            dmin = min(dmin, d)
            dmax = max(dmax, d)
            if d <= p3:
                n3 += 1.0
                g3 += e
                q3 += xe
                if d <= p2:
                    n2 += 1.0
                    g2 += e
                    q2 += xe
                    if d <= p1:
                        n1 += 1.0
                        g1 += e
                        q1 += xe
                        if d <= p0:
                            n0 += 1.0
                            g0 += e
                            q0 += xe
    values[A_N] = n
    values[A_G] = g
    values[A_Q] = q
    values[A_SX] = sx
    values[A_SXX] = sxx
    values[A_DMIN] = dmin
    values[A_DMAX] = dmax
    values[A_PIV] = n0
    values[A_PIV + 1] = g0
    values[A_PIV + 2] = q0
    values[A_PIV + 3] = n1
    values[A_PIV + 4] = g1
    values[A_PIV + 5] = q1
    values[A_PIV + 6] = n2
    values[A_PIV + 7] = g2
    values[A_PIV + 8] = q2
    values[A_PIV + 9] = n3
    values[A_PIV + 10] = g3
    values[A_PIV + 11] = q3
    block_reduce(ws, acc_size(npiv))


def row_scan_rough(z, m, z_min, s, npiv, ws):
    """An exact scan, which keeps the rough scan's contract; unused while ROUGH_SCANS is off."""
    row_scan(z, m, s, math.inf, 1, 0, -1.0, math.inf, npiv, ws, True)
    return math.inf


def row_widen_near(z, m, s, npiv, ws):
    """No near tier here: row_scan_rough's exact scan covers every pivot. Unused while ROUGH_SCANS is off."""
    return math.inf


def row_max_bins(z, s, raw, ws):
    """No histogram here (see row_bins_rough): row_max alone, and no raw sums. Unused while ROUGH_SCANS
    is off."""
    m, n, z_min = row_max(z, ws)
    return m, n, z_min, False, math.nan, math.nan


def row_bins_rough(z, m, z_min, s, frac, raw, binned, ws):
    """No rough histogram here (a block's float64 exponentials are cheap): top-p searches exactly. Unused
    while ROUGH_SCANS is off."""
    return False, 0, 0.0, 0.0, 0.0, 0.0, 0.0, math.nan, math.nan


def row_raw_sums(z, m, ws):
    row_scan(z, m, 1.0, math.inf, 1, 0, -1.0, math.inf, 0, ws, True)
    return ws[0][A_G], ws[0][A_Q]


def row_gather(z, m, dt, ilo, ihi, lo, hi, ws):
    """Gather the bracket's tokens (at most CAP) and sort them by (gap, id) with a bitonic network."""
    cand_d = ws[2]
    cand_i = ws[3]
    counter = ws[COUNTER]
    tid = cuda.threadIdx.x
    cuda.syncthreads()
    if tid == 0:
        counter[0] = 0
    cuda.syncthreads()
    for i in range(tid, z.shape[0], THREADS):
        d = m - np.float64(z[i])
        if inside_kept(d, i, dt, ilo, ihi, lo, hi):
            slot = cuda.atomic.add(counter, 0, 1)
            if slot < CAP:
                cand_d[slot] = d
                cand_i[slot] = i
    cuda.syncthreads()
    n = min(counter[0], CAP)
    size = 1
    while size < n:
        size *= 2
    for j in range(n + tid, size, THREADS):
        cand_d[j] = math.inf
        cand_i[j] = NO_ID
    cuda.syncthreads()
    k = 2
    while k <= size:
        j = k // 2
        while j > 0:
            for idx in range(tid, size, THREADS):
                other = idx ^ j
                if other > idx:
                    da = cand_d[idx]
                    db = cand_d[other]
                    greater = da > db or (da == db and cand_i[idx] > cand_i[other])
                    if greater == ((idx & k) == 0):
                        cand_d[idx] = db
                        cand_d[other] = da
                        ia = cand_i[idx]
                        cand_i[idx] = cand_i[other]
                        cand_i[other] = ia
            cuda.syncthreads()
            j //= 2
        k *= 2
    return n


def row_nth_tied(z, m, dt, ilo, ihi, dval, j, ws):
    """Each thread counts the matches in a contiguous slice of ids; thread 0 finds the slice holding the
    j-th and walks it."""
    red = ws[RED]
    acc = ws[0]
    tid = cuda.threadIdx.x
    vocab = z.shape[0]
    width = (vocab + THREADS - 1) // THREADS
    count = 0.0
    for i in range(tid * width, min(vocab, (tid + 1) * width)):
        d = m - np.float64(z[i])
        if d == dval and (d < dt or (d == dt and ilo <= i and i <= ihi)):
            count += 1.0
    cuda.syncthreads()
    red[0, tid] = count
    cuda.syncthreads()
    if tid == 0:
        acc[0] = -1.0
        before = 0.0
        for t in range(THREADS):
            if before + red[0, t] > j:
                seen = before
                for i in range(t * width, min(vocab, (t + 1) * width)):
                    d = m - np.float64(z[i])
                    if d == dval and (d < dt or (d == dt and ilo <= i and i <= ihi)):
                        if seen == j:
                            acc[0] = i
                            break
                        seen += 1.0
                break
            before += red[0, t]
    cuda.syncthreads()
    return int(acc[0])


def row_draw(z, m, s, dt, ilo, ihi, key, want, ws):
    red = ws[RED]
    acc = ws[0]
    values = ws[VALUES]
    tid = cuda.threadIdx.x
    n = 0.0
    g = 0.0
    q = 0.0
    best = -math.inf
    token = -1.0
    for i in range(tid, z.shape[0], THREADS):
        d = m - np.float64(z[i])
        if d < dt or (d == dt and ilo <= i and i <= ihi):
            x = s * d
            e = math.exp(-x)
            n += 1.0
            g += e
            q += x * e
            if want:
                score = race_score(-x, token_uniform(key, i))
                if score > best or token < 0.0:
                    best = score
                    token = i
    # the winner: the largest score, ties to the lower id
    cuda.syncthreads()
    red[0, tid] = best
    red[1, tid] = token
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            a = red[0, tid]
            b = red[0, tid + stride]
            ta = red[1, tid]
            tb = red[1, tid + stride]
            if tb >= 0.0 and (ta < 0.0 or b > a or (b == a and tb < ta)):
                red[0, tid] = b
                red[1, tid] = tb
        cuda.syncthreads()
        stride //= 2
    winner = int(red[1, 0])
    for k in range(3):
        values[k] = 0.0
    values[A_N] = n
    values[A_G] = g
    values[A_Q] = q
    block_reduce(ws, A_Q + 1)
    return winner, acc[A_N], acc[A_G], acc[A_Q]


def row_write(z, m, s, dt, ilo, ihi, shift, limit, out, ws):
    for i in range(cuda.threadIdx.x, z.shape[0], THREADS):
        v = np.float64(z[i])
        d = m - v
        if d < dt or (d == dt and ilo <= i and i <= ihi):
            out[i] = min(max(s * (v - shift), -limit), limit)
        else:
            out[i] = -math.inf


def chain_kernel(z, ops, prm, keys, out, tel, mode, limit):
    """One block per row of ``z``: apply the program, draw, measure, write (see entrodec.kernels.program)."""
    row = cuda.blockIdx.x
    red = cuda.shared.array((SLOTS, THREADS), numba.float64)
    acc = cuda.shared.array(SLOTS, numba.float64)
    cand_d = cuda.shared.array(CAP, numba.float64)
    cand_i = cuda.shared.array(CAP, numba.int64)
    counter = cuda.shared.array(1, numba.int32)
    piv = cuda.local.array(PIVOTS, numba.float64)
    cache = cuda.local.array(SLOTS, numba.float64)
    values = cuda.local.array(SLOTS, numba.float64)
    ws = (acc, piv, cand_d, cand_i, cache, red, counter, values)
    key = step_key(keys[row, 0], keys[row, 1])
    if out.shape[0] == z.shape[0]:
        run_row(z[row], ops, prm[row], key, out[row], tel[row], mode, limit, ws)
    else:
        run_row(z[row], ops, prm[row], key, out[0], tel[row], mode, limit, ws)


def _decorate(function):
    if function.__name__ == "chain_kernel":
        return cuda.jit(cache=not SIMULATED)(function)
    return cuda.jit(device=True)(function)


COMPILED = instantiate([rules, rng, program, row_program, sys.modules[__name__]], _decorate)


def run_chain_arrays(z, ops, prm, keys, out, tel, mode: int, limit: float, stream=0) -> None:
    """Launch on NumPy or device arrays (the tests' entry point; see :func:`launch` for torch)."""
    COMPILED["chain_kernel"][z.shape[0], THREADS, stream](z, ops, prm, keys, out, tel, mode, limit)


def launch(work, op_codes, params, keys, out, tel, mode: int, limit: float) -> None:
    """Launch on torch CUDA tensors, on torch's current stream (no host synchronisation)."""
    import torch

    stream = cuda.external_stream(torch.cuda.current_stream(work.device).cuda_stream)
    arrays = [cuda.as_cuda_array(t.detach()) for t in (work, op_codes, params, keys, out, tel)]
    run_chain_arrays(*arrays, mode, limit, stream)
