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
from numba import prange, types
from numba.cpython.unsafe.numbers import trailing_zeros
from llvmlite import ir
from numba.core.extending import intrinsic

from . import program, rng, row_program, rules
from .cache import kernel_cache_dir, numba_cache_in
from .compile import instantiate
from .rng import MIX32_MULS, MIX32_SHIFTS, WEYL_HIGH, race_score, step_key, token_uniform
from .row_program import A_DMAX, A_DMIN, A_G, A_N, A_PIV, A_Q, A_SX, A_SXX, acc_size, run_row

PIVOTS = 4  # pivots per search round (even: chunk_pivots takes them in pairs)
PAD = 16  # float64s: two cache lines between threads' work arrays
CHUNK = 256  # tokens per vectorised stage: the chunk buffers stay in L1
# A chunk loop indexes the row at ``np.uint64(start + j)``: Numba tests a signed index for wraparound,
# which it cannot rule out for ``start + j``, and that test per token turns each vector load into eight
# scalar ones (float32 sums of a row: 0.91 against 0.51 ns per token). A slice would avoid it too, but
# its reference count costs more than the chunk's loads.
NEAR_CAP = 4096  # near-tier entries beyond which the recording scan lowers its top by a pivot (row_scan)
WIDE_CAP = 4 * NEAR_CAP  # row_widen_near's: a few thousand appends cost far less than a float64 pass
PROBE_STRIDE = 64  # near_crowded's sample: 768 tokens of 49,152, ±12% at NEAR_CAP
ROW_F, ROW_I = 8, 2  # vocabulary-sized work arrays per thread (float64, int64): see run_chain

# exp(-x) = 2^-k · e^r with k = round(x / ln 2), |r| <= ln2/2, e^r by its Taylor polynomial (degree 12:
# relative error < 1e-14) in Estrin's scheme. Written so that LLVM vectorises it; libm's exp would not be.
# AVX2 has no float64 -> int64 conversion, so k and 2^-k come from the bits of x/ln2 + ROUND_MAGIC
# (integer ops only).
LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
ROUND_MAGIC = 6755399441055744.0  # 1.5 · 2^52: adding it rounds to an integer, held in the low bits
EXP_BITS = np.int64(np.array([ROUND_MAGIC]).view(np.int64)[0] + 1023)  # bits of ROUND_MAGIC, + the exponent bias
EXP_LIMIT = 700.0  # e^-700 ≈ 1e-304: beyond it a token adds nothing a float64 sum can hold
INF_BITS = np.int64(np.array([np.inf]).view(np.int64)[0])  # the bits of +inf, above those of every gap
NO_BITS = np.int64(-1)  # below the bits of every gap (>= +0.0)
NO_SUMS = (0.0, 0.0, 0.0, 0.0, 0.0, INF_BITS, NO_BITS)  # a chunk's sums before its first token (add_token)
# The same in float32 for the raw row's sums that only feed the telemetry (row_raw_sums): AVX2 converts
# float32 <-> int32 in vectors, so k comes from a conversion; degree 7 keeps the error below float32's.
LOG2E_F32 = np.float32(LOG2E)
LN2_HI_F32 = np.float32(0.693145751953125)  # ln 2 to 16 bits: k·LN2_HI_F32 is exact for |k| < 2^8
LN2_LO_F32 = np.float32(1.428606765330187e-06)
EXP_LIMIT_F32 = np.float32(87.0)  # e^-87 ≈ 1.6e-38, float32's smallest normal
ROUGH_SCANS = True  # row_program.top_h_rough: a float32 first scan costs about half a float64 one here
NO_SCALE = math.nan  # the scale of a list without e^-x (a count scan's), or asked for by a pass that reads none
RACE_MARGIN = 1.0001  # race_try's screen, widened by more than a float32 e^-x can be off
# row_bins_rough's histogram: bins of 1/32 scaled nat out to 128 nats, the last one holding what lies
# beyond and infinite logits, massless (its weight is 0: e^-128 is below even float32's subnormals). A token's mass is its
# bin's e^{-k/32} (BIN_WEIGHTS, float64) times e^-r of its offset r < 1/32 in the bin, a cubic in float32
# (truncation error r⁴/24 < 4e-8): no range reduction per token. On SmolLM2's rows at T = 1.5 the bin
# holding top-p 0.9's target has tens to a few hundred tokens, few enough to sort.
BINS = 4096
BIN_SCALE = np.float32(32.0)
LAST_BIN = np.float32(BINS - 1)
BIN_WEIGHTS = np.exp(-np.arange(BINS) / 32.0)
BIN_WEIGHTS[-1] = 0.0
# row_max_bins' histogram, taken before the maximum is known: bins of 1/32 scaled nat counted from zero,
# ``k = ⌈32·s·z⌉`` (abs_bin), stored at ``k mod BINS``. It serves when the row's bins span fewer than BINS - 1
# (under 128 nats), and ``k`` stays far from int32's ends.
BIN_MASK = np.int32(BINS - 1)
ABS_BIN_LIMIT = 2.0 ** 30
# lowest_passing's tests (passes)
BY_GAP, BY_BIN, BY_ABS_BIN = 0, 1, 2

# Work arrays of one thread (``ws``): 0-4 as row_program describes; then
TMP_D, TMP_I = 5, 6                         # gather scratch
GAPS, ES, QS = 7, 8, 9                      # one chunk's stages
HIST = 10                                   # per-pivot sums
LIST_D, LIST_I, LIST_E, LIST_META = 11, 12, 13, 14
NEAR_D, NEAR_I, NEAR_E = 15, 16, 17
GAPS32, ES32, QS32 = 18, 19, 20             # a float32 pass's chunk stages (row_scan_rough, the whole-row draw;
                                            # QS32 as int32: the draws' race_screen marks)
BIN_SUMS = 21                               # row_bins_rough's histogram
# The token list: after the row's first full scan, every kept token's gap, id and e^-x (for the scale
# it was recorded at), compacted whenever a scan's range shrinks. Passes that it covers read it instead
# of the row and skip the exponentials: the whole chain computes them about once. The recording scan
# also keeps, apart, the *near tier*: its tokens up to its second-to-last pivot (a few nats from the
# maximum, where most rules' targets lie; lowered to the pivot below once it outgrows NEAR_CAP), so that
# a pass ending there reads that short list, which stays in cache, instead of compacting the whole one.
# A whole-row recording scan writes only each token's e^-x: gaps and ids follow from the row and the
# position until a pass needs the whole list (most chains never do), which spares two thirds of its memory
# traffic. A bounded one (a threshold rule such as min-p, whose tokens are few) lists its tokens by id, so
# that the draw after it reads those alone instead of the row.
META_VALID, META_TOP, META_SCALE, META_COUNT, META_NEAR_TOP, META_NEAR_COUNT, META_POSITIONAL = 0, 1, 2, 3, 4, 5, 6
# Of the row, not of the list (row_max's): 1 when no logit is infinite, and the lowest finite logit
META_FINITE, META_LOWEST = 7, 8
# The address of the thread's next row (0: none), prefetched by the row's compute-bound first pass
# (prefetch_ahead), and the cache level it is asked into (llvm.prefetch's locality)
META_AHEAD = 9
META_SIZE = 10
AHEAD_LOCALITY = 2
LINE_BYTES = 64
# A chunk's stages: ``gaps`` (inf for tokens outside the scan), ``es = e^-x`` and ``qs = x·e^-x`` (both 0
# outside) with ``x = s·gap``, written by the loop that also sums them (one pass over the chunk: the
# exponential and seven reductions vectorise together), so that the pivot sums are plain or blended adds.


@intrinsic
def float_bits(typingctx, x):
    """The bits of a float64 as an int64 (a register move, which LLVM vectorises)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return types.int64(types.float64), codegen


@intrinsic
def high_half(typingctx, key, token):
    """``rng.token_high(key, token) >> 1`` on 32-bit words (Numba's integer typing would widen the
    multiplies to 64 bits, which AVX2 has no vector instruction for), as an int32 (converts to float64
    in a vector)."""
    def codegen(context, builder, signature, args):
        word = ir.IntType(32)

        def constant(value):  # as a signed 32-bit value, which is how LLVM's i32 constants are written
            return ir.Constant(word, value - (1 << 32) if value >= 1 << 31 else value)

        counter = builder.add(builder.trunc(args[1], word), constant(1))
        x = builder.add(builder.trunc(args[0], word), builder.mul(counter, constant(WEYL_HIGH)))
        for shift, factor in zip(MIX32_SHIFTS, MIX32_MULS):
            x = builder.mul(builder.xor(x, builder.lshr(x, constant(shift))), constant(factor))
        x = builder.xor(x, builder.lshr(x, constant(MIX32_SHIFTS[2])))
        return builder.lshr(x, constant(1))
    return types.int32(types.uint64, types.int64), codegen


@intrinsic
def block_within(typingctx, z, start, lo, top):
    """A word whose bit ``j`` is set when ``lo <= z[start + j] <= top``, for the 64 tokens from ``start`` of
    a contiguous row: 64-lane compares that LLVM packs into the word (movmsk on x86), where a loop
    shifting each test into place cost 0.6 ns a token. A strided row is a typing error, never a wrong read."""
    if not (isinstance(z, types.Array) and z.ndim == 1 and z.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        values, splat = _block_lanes(context, builder, signature, args)
        inside = builder.and_(builder.fcmp_ordered(">=", values, splat(args[2])),
                              builder.fcmp_ordered("<=", values, splat(args[3])))
        return builder.bitcast(inside, ir.IntType(64))
    return types.uint64(z, types.intp, z.dtype, z.dtype), codegen


@intrinsic
def block_at_least(typingctx, z, start, lo):
    """block_within with no upper bound (``lo <= z[start + j]``): half the compares, for a row without
    infinite logits, where every token lies at or below the maximum."""
    if not (isinstance(z, types.Array) and z.ndim == 1 and z.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        values, splat = _block_lanes(context, builder, signature, args)
        return builder.bitcast(builder.fcmp_ordered(">=", values, splat(args[2])), ir.IntType(64))
    return types.uint64(z, types.intp, z.dtype), codegen


def _block_lanes(context, builder, signature, args):
    """The 64 logits from ``args[1]`` of the row ``args[0]`` as one vector, and a function that
    broadcasts a scalar to as many lanes (the block intrinsics' shared code)."""
    row = context.make_array(signature.args[0])(context, builder, args[0])
    lanes = ir.VectorType(context.get_value_type(signature.args[0].dtype), 64)
    at = builder.bitcast(builder.gep(row.data, [args[1]]), lanes.as_pointer())
    values = builder.load(at, align=signature.args[0].dtype.bitwidth // 8)
    everywhere = ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64)

    def splat(value):
        first = builder.insert_element(ir.Constant(lanes, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(first, ir.Constant(lanes, ir.Undefined), everywhere)
    return values, splat


@intrinsic
def order_key(typingctx, x):
    """An integer of the float's width whose signed order is the float's order (the bits, with those
    below the sign flipped for a negative float): LLVM vectorises a max or min over these, not over the
    floats themselves (a float32 row's max and min: 0.08 against 0.31 ns a token). Logits are never NaN."""
    if not isinstance(x, types.Float):
        return None
    width = x.bitwidth

    def codegen(context, builder, signature, args):
        return _flip_below_sign(builder, builder.bitcast(args[0], ir.IntType(width)), width)
    return (types.int32 if width == 32 else types.int64)(x), codegen


@intrinsic
def key_value(typingctx, key, like):
    """The float of ``like``'s type whose order_key is ``key``."""
    if not isinstance(like, types.Float):
        return None

    def codegen(context, builder, signature, args):
        word = ir.IntType(like.bitwidth)
        key_bits = args[0] if key.bitwidth == like.bitwidth else builder.trunc(args[0], word)  # key ± 1 widens
        return builder.bitcast(_flip_below_sign(builder, key_bits, like.bitwidth), context.get_value_type(like))
    if not (isinstance(key, types.Integer) and key.bitwidth >= like.bitwidth):
        return None
    return like(key, like), codegen


def _flip_below_sign(builder, bits, width):
    """``bits ^ ((bits >> (width - 1)) & (2^(width-1) - 1))``: order_key's map, its own inverse."""
    word = ir.IntType(width)
    below_sign = builder.and_(builder.ashr(bits, ir.Constant(word, width - 1)), ir.Constant(word, (1 << (width - 1)) - 1))
    return builder.xor(bits, below_sign)


@intrinsic
def address_of(typingctx, arr):
    """The address of an array's first element, as an int64."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))
    return types.int64(arr), codegen


@intrinsic
def prefetch_at(typingctx, address):
    """Ask for the cache line at ``address`` (an int64) ahead of use: a hint, which never faults."""
    def codegen(context, builder, signature, args):
        byte_ptr = ir.IntType(8).as_pointer()
        word = ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.prefetch", fnty=ir.FunctionType(
            ir.VoidType(), [byte_ptr, word, word, word]))
        builder.call(fn, [builder.inttoptr(args[0], byte_ptr), ir.Constant(word, 0),
                          ir.Constant(word, AHEAD_LOCALITY), ir.Constant(word, 1)])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


def prefetch_ahead(z, start, count, ws):
    """Prefetch the bytes of the thread's next row that lie where row tokens ``start...`` lie in this one:
    called by a row's compute-bound first pass, it overlaps the next row's trip from memory with this
    row's arithmetic (its max pass, memory-bound, then reads it from cache)."""
    at = ws[LIST_META][META_AHEAD]
    if at > 0.0:
        base = np.int64(at) + start * z.itemsize
        for offset in range(0, count * z.itemsize, LINE_BYTES):
            prefetch_at(base + offset)


@intrinsic
def bits_float32(typingctx, x):
    """The float32 whose bits are the int32 ``x``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


@intrinsic
def bits_float(typingctx, x):
    """The float64 whose bits are the int64 ``x``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


def chunk_from_row(z, start, count, m, s, dt, ilo, ihi, lo, hi, gaps, es, qs):
    """The stages of row tokens ``start...`` that are kept and have ``lo < d <= hi`` (gap ``d``, ``e^-x``
    and ``x·e^-x`` with ``x = s·d``; inf, 0 and 0 for the others), and their sums (see chunk_total)."""
    sums = NO_SUMS
    for j in range(count):
        i = start + j
        d = m - np.float64(z[np.uint64(i)])
        inside = (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi)))
        x = s * d if inside else math.inf
        e = exp_neg(x)
        xe = min(x, EXP_LIMIT) * e
        gaps[j] = d if inside else math.inf
        es[j] = e
        qs[j] = xe
        sums = add_token(sums, inside, d, x, e, xe)
    return chunk_total(sums)


def chunk_from_list(list_d, list_i, list_e, start, count, s, dt, ilo, ihi, lo, hi, gaps, es, qs):
    """The same for entries ``start...`` of the token list, with their recorded ``e^-x`` (the race reads
    the ids from the list itself)."""
    sums = NO_SUMS
    for j in range(count):
        d = list_d[np.uint64(start + j)]
        i = list_i[np.uint64(start + j)]
        inside = (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi)))
        x = s * d
        recorded = list_e[np.uint64(start + j)]  # loaded whatever ``inside`` is: a conditional load would not vectorise
        e = recorded if inside else 0.0
        xe = x * e if inside else 0.0
        gaps[j] = d if inside else math.inf
        es[j] = e
        qs[j] = xe
        sums = add_token(sums, inside, d, x, e, xe)
    return chunk_total(sums)


def chunk_draw_list(list_d, list_i, list_e, start, count, s, dt, ilo, ihi, gaps, es):
    """chunk_from_list for the draw over a list that holds every kept token: the kept entries' gaps and
    ``e^-x`` (inf and 0 for the others) and their count, G and Q alone (the four other sums and the
    ``x·e^-x`` stage cost the draw a sixth of its time)."""
    n = 0.0
    g = 0.0
    q = 0.0
    for j in range(count):
        d = list_d[np.uint64(start + j)]
        i = list_i[np.uint64(start + j)]
        inside = (d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))
        recorded = list_e[np.uint64(start + j)]
        e = recorded if inside else 0.0
        gaps[j] = d if inside else math.inf
        es[j] = e
        n += np.float64(inside)
        g += e
        q += s * d * e if inside else 0.0
    return n, g, q


def chunk_gaps(list_d, list_i, z, m, start, count, from_list, dt, ilo, ihi, lo, hi, gaps):
    """A count scan's chunk (row tokens or list entries ``start...``): the gaps of kept tokens with
    ``lo < d <= hi`` (inf for the others), their count and extreme gaps; no exponential."""
    n = 0.0
    low = INF_BITS
    high = NO_BITS
    for j in range(count):
        d = list_d[np.uint64(start + j)] if from_list else m - np.float64(z[np.uint64(start + j)])
        i = list_i[np.uint64(start + j)] if from_list else start + j
        inside = (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi)))
        gaps[j] = d if inside else math.inf
        bits = float_bits(d if inside else math.inf)
        n += np.float64(inside)
        low = min(low, bits)
        high = max(high, bits if inside else NO_BITS)
    return n, bits_float(low), bits_float(high) if high >= 0 else -math.inf


def chunk_counts(gaps, count, piv, first, hist):
    """Add the chunk's count of tokens with ``d <= piv[k]`` to ``hist[3k]``, for pivots ``first...``."""
    for k in range(first, piv.shape[0]):
        p = piv[k]
        n = 0.0
        for j in range(count):
            n += np.float64(gaps[j] <= p)
        hist[3 * k] += n


def add_token(sums, inside, d, x, e, xe):
    """A token's share of its chunk's count, G, Q, Σx, Σx² and extreme gaps. The extremes are taken on
    the gaps' bits, which order as the gaps do (a kept token's gap is >= 0): with a float min/max the
    chunk loops did not vectorise once inlined into the scan (measured: 8.2 against 3.0 ns per token)."""
    n, g, q, sx, sxx, low, high = sums
    xi = x if inside else 0.0
    bits = float_bits(d if inside else math.inf)
    return (n + np.float64(inside), g + e, q + xe, sx + xi, sxx + xi * xi, min(low, bits),
            max(high, bits if inside else NO_BITS))


def chunk_total(sums):
    """Count, G, Q, Σx, Σx², min and max gap (inf and -inf when none) of a chunk's tokens."""
    n, g, q, sx, sxx, low, high = sums
    return n, g, q, sx, sxx, bits_float(low), bits_float(high) if high >= 0 else -math.inf


def row_floor(m, top):
    """A logit at or below that of every token with gap ``<= top`` (``-inf`` for an unbounded pass), so
    that a chunk whose maximum lies below it can be skipped unread by the exact test (a bounded pass then
    costs about one vectorised read of the row). The margin covers the rounding of ``m − z``."""
    return (m - top) - (abs(m) + abs(top)) * 1e-9


def chunk_top(z, start, count):
    """The largest logit of row tokens ``start...`` (in the row's dtype: one vectorised read of order_key)."""
    top = order_key(z[start])
    for j in range(count):
        top = max(top, order_key(z[np.uint64(start + j)]))
    return key_value(top, z[start])


def chunk_below(z, start, count, floor):
    """Whether row tokens ``start...`` all lie below ``floor`` (never for ``floor = -inf``)."""
    return (floor > -math.inf) and (np.float64(chunk_top(z, start, count)) < floor)


def exp_neg(x):
    """``e^-x`` for ``x >= 0`` (0 beyond EXP_LIMIT, inf included). Compiled apart with contraction alone:
    the chunk loops that inline it may reassociate their sums, but reassociating this would undo the
    exact range reduction (``t − ROUND_MAGIC`` folded away)."""
    xc = min(x, EXP_LIMIT)
    t = xc * LOG2E + ROUND_MAGIC
    k = t - ROUND_MAGIC
    r = (k * LN2_HI - xc) + k * LN2_LO
    # Estrin's scheme: pairs, then powers r², r⁴, r⁸ (a dependency chain of 6 instead of Horner's 12)
    r2 = r * r
    r4 = r2 * r2
    p03 = (1.0 + r) + (0.5 + 1.6666666666666666e-01 * r) * r2
    p47 = (4.1666666666666664e-02 + 8.3333333333333332e-03 * r) + (
        1.3888888888888889e-03 + 1.9841269841269841e-04 * r) * r2
    p812 = (2.4801587301587302e-05 + 2.7557319223985893e-06 * r) + (
        2.7557319223985888e-07 + 2.5052108385441720e-08 * r) * r2 + 2.0876756987868100e-09 * r4
    p = (p03 + p47 * r4) + p812 * (r4 * r4)
    e = p * bits_float((EXP_BITS - float_bits(t)) << 52)  # 2^-k: the biased exponent 1023 - k
    return e if x <= EXP_LIMIT else 0.0


def chunk_pivots(gaps, es, qs, count, piv, first, hist):
    """Add the chunk's sums over tokens with ``d <= piv[k]`` to ``hist[3k:3k+3]``, for pivots ``first...``
    (one short loop per pivot, with the mask as a 0/1 factor: each vectorises)."""
    for k in range(first, piv.shape[0]):
        p = piv[k]
        n = 0.0
        g = 0.0
        q = 0.0
        for j in range(count):
            below = np.float64(gaps[j] <= p)
            n += below
            g += below * es[j]
            q += below * qs[j]
        hist[3 * k] += n
        hist[3 * k + 1] += g
        hist[3 * k + 2] += q


def near_pivots(s, piv, first, last, hist, ws):
    """The sums of pivots ``first...last-1`` (all at or below the near tier's top) from the near tier,
    so that the recording scan sums only the pivots above it."""
    count = int(ws[LIST_META][META_NEAR_COUNT])
    near_d = ws[NEAR_D]
    near_e = ws[NEAR_E]
    for k in range(first, last):
        p = piv[k]
        n = 0.0
        g = 0.0
        q = 0.0
        for j in range(count):
            d = near_d[j]
            below = np.float64(d <= p)
            n += below
            g += below * near_e[j]
            q += below * (min(s * d, EXP_LIMIT) * near_e[j])
        hist[3 * k] += n
        hist[3 * k + 1] += g
        hist[3 * k + 2] += q


def near_crowded(z, m, top, cap=NEAR_CAP):
    """Whether a near tier up to ``top`` would outgrow ``cap`` entries, judged from every PROBE_STRIDE-th token
    (spread over the whole row: a language model's common tokens cluster at low ids, so a prefix would
    overestimate). It spares a flat row the mispredicted appends before the tier's overflow."""
    sampled = 0
    for i in range(0, z.shape[0], PROBE_STRIDE):
        sampled += 1 if m - np.float64(z[i]) <= top else 0
    return sampled * PROBE_STRIDE > cap


def tier_start(z, m, piv, tiered, near):
    """The near tier's pivot count and top for a recording scan: on a flat row (near_crowded) it starts
    where it would end once it outgrew NEAR_CAP."""
    while (tiered >= 2) and near_crowded(z, m, near):
        tiered -= 1
        near = piv[tiered - 1]
    return tiered, near


def tier_lower(s, piv, tiered, hist, ws):
    """A near tier that outgrew NEAR_CAP mid-scan (a flat row: so long a tier costs more, in mispredicted
    appends and copies, than it saves) ends at the pivot below from now on: the pivot it ended at takes
    its sums so far from it, and the chunks after this one sum that pivot themselves."""
    near_pivots(s, piv, tiered - 1, tiered, hist, ws)
    tiered -= 1
    near = piv[tiered - 1]
    near_shrink(near, ws)
    return tiered, near


def near_shrink(top, ws):
    """Drop near-tier entries with ``d > top``."""
    meta = ws[LIST_META]
    meta[META_NEAR_COUNT] = compact_entries(ws[NEAR_D], ws[NEAR_I], ws[NEAR_E], int(meta[META_NEAR_COUNT]), top)


def list_set(ws, top, count, near, positional, scale):
    """Mark the token list valid: ``count`` entries (by position, or by id) holding every kept token with
    ``d <= top``, with ``e^-x`` at ``scale`` (NO_SCALE: none), and its near tier up to ``near``."""
    meta = ws[LIST_META]
    meta[META_VALID] = 1.0
    meta[META_TOP] = top
    meta[META_COUNT] = count
    meta[META_NEAR_TOP] = near
    meta[META_POSITIONAL] = 1.0 if positional else 0.0
    meta[META_SCALE] = scale


def list_covers(ws, dt, hi):
    """Whether the token list holds every kept token with ``d <= hi`` (kept tokens all have ``d <= dt``:
    the rules only ever shrink the kept set)."""
    meta = ws[LIST_META]
    return (meta[META_VALID] == 1.0) & (min(hi, dt) <= meta[META_TOP])


def list_worth_reading(ws, dt, hi, s):
    """Whether a pass that sums over kept tokens with ``d <= hi`` at scale ``s`` (NO_SCALE: that counts
    them) should read the token list: it must cover them, and not be a whole row recorded at another
    scale (the telemetry's scan at T = 1 before a temperature), which would cost more to rescale than the
    row costs to read, unless the near tier holds them."""
    meta = ws[LIST_META]
    same_scale = (meta[META_SCALE] == s) | (meta[META_POSITIONAL] == 0.0) | (min(hi, dt) <= meta[META_NEAR_TOP])
    return list_covers(ws, dt, hi) & same_scale


def list_ready(z, m, top, s, once, ws):
    """The entries of the shortest list that holds every kept token with ``d <= top``, with ``e^-x`` at
    scale ``s`` (NO_SCALE: the caller reads no ``e^-x``; the list must cover ``top``): ``(gaps, ids,
    e^-x, count)``. The near tier itself when it reaches ``top`` at this scale (read in place: copying
    it into the list cost more than reading it); else the list, made to hold exactly those tokens
    (compacted before its exponentials are computed, if they must be) unless the caller reads it
    ``once`` and tests each entry's range itself: a compaction would read it all to spare one read."""
    meta = ws[LIST_META]
    rescale = needs_rescale(meta, s)
    if near_reaches(meta, top) & (not rescale):
        return ws[NEAR_D], ws[NEAR_I], ws[NEAR_E], int(meta[META_NEAR_COUNT])
    list_take_near(top, ws)
    list_materialise(z, m, ws)
    if (top < meta[META_TOP]) & ((not once) | rescale):
        list_compact(top, ws)
    list_rescale(s, ws)
    return ws[LIST_D], ws[LIST_I], ws[LIST_E], int(meta[META_COUNT])


def near_reaches(meta, top):
    """Whether the near tier holds every listed token with ``d <= top`` and is shorter than the list."""
    return (top <= meta[META_NEAR_TOP]) & (meta[META_NEAR_TOP] < meta[META_TOP])


def list_take_near(top, ws):
    """When ``top`` lies within the near tier, make it the list: a copy of its few entries instead of a
    compaction of the whole list (for a pass at another scale, which rescales the list; one at the
    tier's own scale reads the tier in place)."""
    meta = ws[LIST_META]
    if not near_reaches(meta, top):
        return
    count = int(meta[META_NEAR_COUNT])
    ws[LIST_D][:count] = ws[NEAR_D][:count]
    ws[LIST_I][:count] = ws[NEAR_I][:count]
    ws[LIST_E][:count] = ws[NEAR_E][:count]
    meta[META_COUNT] = count
    meta[META_TOP] = meta[META_NEAR_TOP]
    meta[META_POSITIONAL] = 0.0


def list_materialise(z, m, ws):
    """Write the gaps and ids of a list recorded by position. Tokens that were outside the recording
    scan get their gap too: every consumer's own range and kept-set test excludes them again (the kept
    set only shrinks, and no range reaches above the list's top)."""
    meta = ws[LIST_META]
    if meta[META_POSITIONAL] == 0.0:
        return
    list_d = ws[LIST_D]
    list_i = ws[LIST_I]
    for i in range(z.shape[0]):
        list_d[i] = m - np.float64(z[i])
        list_i[i] = i
    meta[META_POSITIONAL] = 0.0


def list_record(start, count, near, sums, ws):
    """Write the chunk's ``e^-x`` into the list (by position; a count scan has none, ``es`` holds zeros),
    and append its tokens with ``d <= near`` to the near tier (few: the branch is predictable)."""
    meta = ws[LIST_META]
    gaps = ws[GAPS]
    es = ws[ES]
    list_e = ws[LIST_E]
    if sums:
        for j in range(count):
            list_e[np.uint64(start + j)] = es[j]
    n_near = int(meta[META_NEAR_COUNT])
    for j in range(count):
        if gaps[j] <= near:
            ws[NEAR_D][n_near] = gaps[j]
            ws[NEAR_I][n_near] = start + j
            ws[NEAR_E][n_near] = es[j]
            n_near += 1
    meta[META_NEAR_COUNT] = n_near


def list_append(start, count, listed, ws):
    """Append the chunk's tokens inside the scan (gap, id, ``e^-x``) to the list's ``listed`` entries;
    returns the new count (branch-free: the writes past the end are overwritten by the next token)."""
    gaps = ws[GAPS]
    es = ws[ES]
    list_d = ws[LIST_D]
    list_i = ws[LIST_I]
    list_e = ws[LIST_E]
    for j in range(count):
        d = gaps[j]
        list_d[listed] = d
        list_i[listed] = start + j
        list_e[listed] = es[j]
        listed += 1 if d < math.inf else 0
    return listed


def needs_rescale(meta, s):
    """Whether the list's ``e^-x`` must be recomputed for a reader at scale ``s`` (NO_SCALE: one that reads
    none)."""
    return (meta[META_SCALE] != s) & (s == s)


def list_rescale(s, ws):
    """Recompute the list's ``e^-x`` for a new scale (after a temperature, or for a list that a count
    scan recorded without them); nothing for NO_SCALE."""
    meta = ws[LIST_META]
    if not needs_rescale(meta, s):
        return
    meta[META_NEAR_TOP] = -math.inf  # its e^-x are for the old scale
    list_d = ws[LIST_D]
    list_e = ws[LIST_E]
    for j in range(int(meta[META_COUNT])):
        list_e[j] = exp_neg(s * list_d[j])
    meta[META_SCALE] = s


def list_compact(top, ws):
    """Drop list entries with ``d > top``."""
    meta = ws[LIST_META]
    meta[META_COUNT] = compact_entries(ws[LIST_D], ws[LIST_I], ws[LIST_E], int(meta[META_COUNT]), top)
    meta[META_TOP] = top


def compact_entries(gaps, ids, es, count, top):
    """Keep the first ``count`` entries with ``d <= top``, in place and in order; returns how many."""
    kept = 0
    for j in range(count):  # branch-free: about half the entries go, unpredictably
        d = gaps[j]
        i = ids[j]
        e = es[j]
        gaps[kept] = d
        ids[kept] = i
        es[kept] = e
        kept += 1 if d <= top else 0
    return kept


def chunk_raw_sums(z, mz, start, count):
    """G and Q over row tokens ``start...`` at ``s = 1`` with float32 exponentials, summed in float32
    (``mz``: the row maximum in the row's dtype; tokens above it, i.e. +inf, and beyond EXP_LIMIT_F32,
    which includes -inf, add nothing). Reassociation lets the sums vectorise; measured error of the
    row's G and Q against float64: < 4e-7 relative."""
    g = np.float32(0.0)
    q = np.float32(0.0)
    for j in range(count):
        xf, e = raw_token(mz - z[np.uint64(start + j)])
        g += e
        q += xf * e
    return np.float64(g), np.float64(q)


def raw_token(x):
    """A token of gap ``x`` (row dtype) at ``s = 1`` for the raw sums: its float32 ``x`` (clamped) and
    ``e^-x`` (0 for +inf, beyond EXP_LIMIT_F32 and -inf)."""
    inside = (x >= np.float32(0.0)) & (x <= EXP_LIMIT_F32)
    xf = np.float32(x) if inside else EXP_LIMIT_F32
    e = exp_neg_f32(xf)
    return xf, e if inside else np.float32(0.0)


def exp_neg_f32(xf):
    """``e^-x`` in float32 for ``0 <= x <= EXP_LIMIT_F32`` (relative error below 1.1e-7, measured on 2·10⁶
    points; float32's rounding of ``x`` itself adds more): k from a conversion, which AVX2 vectorises for
    float32, and a degree-7 polynomial in Estrin's form, 1 added last. The chunk loops that inline it are
    bound by its latency, not their throughput: Horner's chain of seven FMAs made the rough scan 7% slower
    (its error 7.8e-8)."""
    k = np.int32(xf * LOG2E_F32 + np.float32(0.5))  # round half up: xf >= 0
    kf = np.float32(k)
    r = (kf * LN2_HI_F32 - xf) + kf * LN2_LO_F32
    r2 = r * r
    r4 = r2 * r2
    p23 = np.float32(0.5) + r * np.float32(1.6666667e-01)
    p45 = np.float32(4.1666668e-02) + r * np.float32(8.3333338e-03)
    p67 = np.float32(1.3888889e-03) + r * np.float32(1.9841270e-04)
    p = np.float32(1.0) + ((r + r2 * p23) + r4 * (p45 + r2 * p67))
    return p * bits_float32(np.int32((np.int32(127) - k) << np.int32(23)))  # 2^-k


def row_raw_sums(z, m, ws):
    """G and Q of the whole row at T = 1 for the telemetry alone (its entropy before the chain, when
    the chain's first op rescales the row at once): a report, not a decision, so float32 exponentials
    (vectorised 8 wide, about a quarter of the float64 scan's time) do, about as precise as the torch
    reference's own float32 log-softmax."""
    own = z[:1].copy()  # the maximum in the row's dtype (exact: it is one of the row's values)
    own[0] = m
    mz = own[0]
    n = z.shape[0]
    g = 0.0
    q = 0.0
    for start in range(0, n, CHUNK):
        cg, cq = chunk_raw_sums(z, mz, start, min(CHUNK, n - start))
        g += cg
        q += cq
    return g, q


def row_max(z, ws):
    meta = ws[LIST_META]
    meta[META_VALID] = 0.0  # a new row: the list belongs to another
    top, lowest = plain_extremes(z)
    finite = (top < math.inf) & (lowest > -math.inf)
    meta[META_FINITE] = 1.0 if finite else 0.0
    meta[META_LOWEST] = lowest
    if finite:  # no masked or infinite logit: every token counts
        return np.float64(top), z.shape[0], np.float64(lowest)
    m = -math.inf
    lowest = math.inf
    n = 0
    for i in range(z.shape[0]):
        v = np.float64(z[i])
        finite = (v > -math.inf) & (v < math.inf)
        n += 1 if finite else 0
        m = max(m, v if finite else -math.inf)
        lowest = min(lowest, v if finite else math.inf)
    meta[META_LOWEST] = lowest
    return m, n, lowest


def plain_extremes(z):
    """Max and min of the row in its own dtype (one vectorised pass over order_key: a float32 row is read
    8 lanes at a time, and nothing is masked)."""
    top = order_key(z[0])
    lowest = top
    for i in range(z.shape[0]):
        key = order_key(z[i])
        top = max(top, key)
        lowest = min(lowest, key)
    return key_value(top, z[0]), key_value(lowest, z[0])


def row_scan(z, m, s, dt, ilo, ihi, lo, hi, npiv, ws, sums):
    """Sums over kept tokens in ``(lo, hi]`` (see row_program), from the token list when it covers the
    range (compacting it to the range's top), else from the row (recording the list when ``lo`` is
    below every gap). A count scan (``sums`` false) computes counts and extreme gaps alone: no
    exponential, and a list recorded without ``e^-x`` (its scale NaN: readers that need them compute
    them, for the few tokens they keep)."""
    acc = ws[0]
    whole = (lo < 0.0) and (hi == math.inf) and (dt == math.inf) and (ilo > ihi)
    if whole and sums and (npiv == 0):
        whole_row_sums(z, m, s, acc)
        return
    if whole and (not sums) and (npiv >= 2) and (ws[LIST_META][META_FINITE] == 1.0):
        count_row(z, m, npiv, ws)
        return
    piv = ws[1]
    hist = ws[HIST]
    gaps = ws[GAPS]
    es = ws[ES]
    qs = ws[QS]
    list_d = ws[LIST_D]
    list_i = ws[LIST_I]
    list_e = ws[LIST_E]
    meta = ws[LIST_META]
    for k in range(3 * PIVOTS):
        hist[k] = 0.0
    top = min(hi, dt)
    # a count reads any list that covers the range: it needs no e^-x, and later rounds read it compacted
    from_list = list_worth_reading(ws, dt, hi, s) if sums else list_covers(ws, dt, hi)
    total = z.shape[0]
    if from_list:
        list_d, list_i, list_e, total = list_ready(z, m, top, s if sums else NO_SCALE, False, ws)
    # a whole-row scan without pivots wants sums alone (an entropy before a temperature changes the scale)
    record = (not from_list) & (lo < 0.0) & ((npiv > 0) | (hi < math.inf))
    # A bounded scan (a threshold rule's) lists its tokens by id: few of them, and the passes after it
    # then read only those. A whole-row scan lists by position (below).
    compact = record & (hi < math.inf)
    # the near tier ends at the second-to-last pivot; none without pivots, or when it would be everything
    near = piv[npiv - 2] if record and (not compact) and npiv >= 2 else -math.inf
    near = near if near < top else -math.inf
    tiered = npiv - 1 if near >= 0.0 else 0  # pivots 0...tiered-1 lie at or below it: summed from the tier
    tiered, near = tier_start(z, m, piv, tiered, near)
    listed = 0
    # a bounded pass over the row skips the chunks that hold no token below its top (a positional record
    # must write every chunk)
    floor = row_floor(m, top) if (not from_list) & ((not record) | compact) else -math.inf
    if record:
        meta[META_NEAR_COUNT] = 0.0
    if not sums:
        for j in range(CHUNK):  # what a count scan records as e^-x, for the tier and list_append
            es[j] = 0.0
    n = 0.0
    g = 0.0
    q = 0.0
    sx = 0.0
    sxx = 0.0
    dmin = math.inf
    dmax = -math.inf
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        if (not from_list) and chunk_below(z, start, count, floor):
            continue
        if not sums:
            cn, cmin, cmax = chunk_gaps(list_d, list_i, z, m, start, count, from_list, dt, ilo, ihi, lo, hi, gaps)
            cg = cq = csx = csxx = 0.0
        elif from_list:
            cn, cg, cq, csx, csxx, cmin, cmax = chunk_from_list(list_d, list_i, list_e, start, count, s, dt, ilo, ihi, lo,
                                                                hi, gaps, es, qs)
        else:
            cn, cg, cq, csx, csxx, cmin, cmax = chunk_from_row(z, start, count, m, s, dt, ilo, ihi, lo, hi, gaps, es, qs)
        if compact:
            if cn > 0.0:
                listed = list_append(start, count, listed, ws)
        elif record:
            list_record(start, count, near, sums, ws)
        if cn == 0.0:
            continue
        n += cn
        g += cg
        q += cq
        sx += csx
        sxx += csxx
        dmin = min(dmin, cmin)
        dmax = max(dmax, cmax)
        if npiv > 0:
            if sums:
                chunk_pivots(gaps, es, qs, count, piv[:npiv], tiered, hist)
            else:
                chunk_counts(gaps, count, piv[:npiv], tiered, hist)
        if (tiered >= 2) & (meta[META_NEAR_COUNT] > NEAR_CAP):
            tiered, near = tier_lower(s, piv, tiered, hist, ws)
    if near >= 0.0:
        near_pivots(s, piv, 0, tiered, hist, ws)
    if record:
        list_set(ws, top, listed if compact else z.shape[0], near, not compact, s if sums else NO_SCALE)
    for k in range(3 * npiv):
        acc[A_PIV + k] = hist[k]
    acc[A_N] = n
    acc[A_G] = g if sums else math.nan
    acc[A_Q] = q if sums else math.nan
    acc[A_SX] = sx if sums else math.nan
    acc[A_SXX] = sxx if sums else math.nan
    acc[A_DMIN] = dmin
    acc[A_DMAX] = dmax


def count_row(z, m, npiv, ws):
    """row_scan's count scan of a whole row with no infinite logit (a search by count's first round:
    top-k, transformers' Top-H): each pivot's count from a compare of the raw logits against the lowest
    logit within the pivot's gap (lowest_passing: exact), no gap computed, nothing staged; the near tier
    listed 64 tokens per compare from the chunks that hold any of its tokens (0.7 against 2.5 ns a token)."""
    piv = ws[1]
    meta = ws[LIST_META]
    acc = ws[0]
    tiered, near = tier_start(z, m, piv, npiv - 1, piv[npiv - 2])
    mz, sz = in_row_dtype(z, m, 1.0)
    z_min = z[:1].copy()
    z_min[0] = meta[META_LOWEST]
    floors = np.empty(npiv, dtype=z.dtype)  # the pivots' lowest logits, in the row's dtype
    for k in range(npiv):
        floors[k] = lowest_passing(z, m, mz, sz, z_min[0], piv[k], BY_GAP, 0)
    counts = np.zeros(npiv)
    meta[META_NEAR_COUNT] = 0.0
    vocab = z.shape[0]
    for start in range(0, vocab, CHUNK):
        count = min(CHUNK, vocab - start)
        prefetch_ahead(z, start, count, ws)
        near_here = 0.0
        for k in range(npiv):
            c = chunk_at_least(z, start, count, floors[k])
            counts[k] += c
            near_here = c if k == tiered - 1 else near_here
        if near_here > 0.0:
            near_append_blocks(z, m, start, count, floors[tiered - 1], mz, ws)
    ws[NEAR_E][:int(meta[META_NEAR_COUNT])] = 0.0  # what a count scan records as e^-x
    list_set(ws, math.inf, vocab, near, True, NO_SCALE)
    for k in range(npiv):
        acc[A_PIV + 3 * k] = counts[k]
        acc[A_PIV + 3 * k + 1] = 0.0
        acc[A_PIV + 3 * k + 2] = 0.0
    acc[A_N] = vocab
    for k in (A_G, A_Q, A_SX, A_SXX):
        acc[k] = math.nan
    acc[A_DMIN] = 0.0
    acc[A_DMAX] = m - np.float64(z_min[0])


def chunk_at_least(z, start, count, floor):
    """How many of row tokens ``start...`` are ``>= floor`` (row dtype)."""
    n = np.float32(0.0)
    for j in range(count):
        n += np.float32(z[np.uint64(start + j)] >= floor)
    return np.float64(n)


def whole_row_sums(z, m, s, acc):
    """row_scan's count, G and Q of every finite token, the rest of its results NaN: what a whole-row
    scan without pivots is asked for (an entropy that sets a temperature). No stage is stored and no
    other sum taken: 2.1 against 2.9 ns per token."""
    n = 0.0
    g = 0.0
    q = 0.0
    for start in range(0, z.shape[0], CHUNK):
        cn, cg, cq = chunk_sums(z, start, min(CHUNK, z.shape[0] - start), m, s)
        n += cn
        g += cg
        q += cq
    for k in range(A_PIV):
        acc[k] = math.nan
    acc[A_N] = n
    acc[A_G] = g
    acc[A_Q] = q


def chunk_sums(z, start, count, m, s):
    """Count, G and Q (float64) of the finite tokens among row tokens ``start...``."""
    n = 0.0
    g = 0.0
    q = 0.0
    for j in range(count):
        d = m - np.float64(z[np.uint64(start + j)])
        inside = abs(d) < math.inf  # finite (d >= 0 follows): as two tests it cost 0.7 ns per token
        x = s * d if inside else math.inf
        e = exp_neg(x)
        n += np.float64(inside)
        g += e
        q += min(x, EXP_LIMIT) * e
    return n, g, q


def row_gather(z, m, dt, ilo, ihi, lo, hi, ws):
    cand_d = ws[2]
    cand_i = ws[3]
    tmp_d = ws[TMP_D]
    tmp_i = ws[TMP_I]
    n = 0
    if list_covers(ws, dt, hi):
        list_d, list_i, _, total = list_ready(z, m, min(hi, dt), NO_SCALE, True, ws)  # a gather reads no e^-x
        for j in range(total):
            d = list_d[j]
            i = list_i[j]
            tmp_d[n] = d
            tmp_i[n] = int(i)
            n += 1 if (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))) else 0
    else:
        floor = row_floor(m, min(hi, dt))
        vocab = z.shape[0]
        for start in range(0, vocab, CHUNK):
            count = min(CHUNK, vocab - start)
            if chunk_below(z, start, count, floor):
                continue
            for i in range(start, start + count):
                d = m - np.float64(z[i])
                tmp_d[n] = d
                tmp_i[n] = i
                n += 1 if (d > lo) & (d <= hi) & ((d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))) else 0
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
    if list_worth_reading(ws, dt, math.inf, s):
        list_d, list_i, list_e, total = list_ready(z, m, dt, s, True, ws)
        return draw_over(z, m, s, dt, ilo, ihi, key, want, list_d, list_i, list_e, total, True, ws)
    if (dt == math.inf) & (ilo > ihi):  # every finite token is kept (a temperature-only chain)
        return draw_whole_row(z, m, s, key, want, ws)
    # the work arrays as placeholders: a pass over the row reads no list (measured: choosing between
    # two lists inside the loop's function cost a whole-row draw 2-4%)
    return draw_over(z, m, s, dt, ilo, ihi, key, want, ws[LIST_D], ws[LIST_I], ws[LIST_E], z.shape[0], False, ws)


def draw_over(z, m, s, dt, ilo, ihi, key, want, list_d, list_i, list_e, total, from_list, ws):
    """row_draw over a list's first ``total`` entries (``from_list``), or over the row."""
    gaps = ws[GAPS]
    es = ws[ES]
    qs = ws[QS]
    hits = ws[QS32].view(np.int32)  # race_screen's marks (no float32 pass is under way)
    floor = row_floor(m, dt)
    n = 0.0
    g = 0.0
    q = 0.0
    best = -math.inf
    weight = math.inf  # e^-best: a token can only win if E < e^-x · e^-best
    token = -1
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        if from_list:
            cn, cg, cq = chunk_draw_list(list_d, list_i, list_e, start, count, s, dt, ilo, ihi, gaps, es)
        else:
            if chunk_below(z, start, count, floor):
                continue
            cn, cg, cq, _, _, _, _ = chunk_from_row(z, start, count, m, s, dt, ilo, ihi, -1.0, math.inf, gaps, es, qs)
        if cn == 0.0:
            continue
        n += cn
        g += cg
        q += cq
        if want and race_screen(key, list_i, start, count, from_list, es, weight, hits) > 0:
            for j in range(count):
                x = s * gaps[j]
                if (hits[j] != 0) & (x < math.inf):
                    i = int(list_i[start + j]) if from_list else start + j
                    best, weight, token = race_try(key, i, x, es[j], best, weight, token)
    return token, n, g, q


def draw_whole_row(z, m, s, key, want, ws):
    """row_draw when every finite token is kept: the sums with float32 exponentials (about half the
    float64 pass's time; they only feed the telemetry), the race on float64 scores as everywhere else,
    the float32 ``e^-x`` only screening its candidates."""
    es = ws[ES32]
    hits = ws[QS32].view(np.int32)  # race_screen's marks
    mz, sz = in_row_dtype(z, m, s)
    n = 0.0
    g = 0.0
    q = 0.0
    best = -math.inf
    weight = math.inf
    token = -1
    for start in range(0, z.shape[0], CHUNK):
        count = min(CHUNK, z.shape[0] - start)
        cn, cg, cq = chunk_whole_row(z, mz, sz, start, count, es)
        n += cn
        g += cg
        q += cq
        if want and race_screen(key, ws[LIST_I], start, count, False, es, weight, hits) > 0:
            for j in range(count):
                if (hits[j] != 0) & (es[j] >= 0.0):
                    i = start + j
                    best, weight, token = race_try(key, i, s * (m - np.float64(z[i])), np.float64(es[j]), best,
                                                   weight, token)
    return token, n, g, q


def chunk_whole_row(z, mz, sz, start, count, es):
    """chunk_rough for the draw, with one stage (one store per token instead of three: 0.6 ns of 1.9 per
    token): ``es``, where inf marks a token beyond EXP_LIMIT_F32, which the race must test exactly, and -1
    one that is not kept (an infinite logit)."""
    n = np.float32(0.0)
    g = np.float32(0.0)
    q = np.float32(0.0)
    for j in range(count):
        dz = mz - z[np.uint64(start + j)]
        inside, near, xc, e = rough_token(dz, sz)
        es[j] = e if near else (np.float32(math.inf) if inside else np.float32(-1.0))
        n += np.float32(1.0) if inside else np.float32(0.0)
        g += e
        q += xc * e
    return np.float64(n), np.float64(g), np.float64(q)


def rough_token(dz, sz):
    """A token of gap ``dz`` (row dtype) at scale ``sz``: whether it is finite, whether its float32 ``e^-x``
    is above zero, its ``x`` (clamped at EXP_LIMIT_F32) and ``e^-x`` (0 beyond it)."""
    inside = abs(dz) < math.inf  # finite (dz >= 0 follows); one test vectorises better than two
    xf = np.float32(sz * dz)
    near = inside & (xf <= EXP_LIMIT_F32)
    xc = xf if near else EXP_LIMIT_F32
    e = exp_neg_f32(xc)
    return inside, near, xc, e if near else np.float32(0.0)


def in_row_dtype(z, m, s):
    """The row maximum and the scale in the row's dtype (a float32 pass computes in it)."""
    own = z[:1].copy()
    own[0] = m
    mz = own[0]
    own[0] = s
    return mz, own[0]


def chunk_rough(z, mz, sz, start, count, gaps, es, qs):
    """Count, G and Q of the finite tokens among row tokens ``start...`` at scale ``sz``, with float32
    exponentials and sums (the error bound is row_program.ROUGH_EPS), and their stages in float32:
    ``gaps`` (inf for an infinite logit), ``es = e^-x`` and ``qs = x·e^-x`` (0 beyond EXP_LIMIT_F32)."""
    n = np.float32(0.0)
    g = np.float32(0.0)
    q = np.float32(0.0)
    for j in range(count):
        dz = mz - z[np.uint64(start + j)]
        inside, near, xc, e = rough_token(dz, sz)
        gaps[j] = dz if inside else np.float32(math.inf)
        es[j] = e
        qs[j] = xc * e
        n += np.float32(1.0) if inside else np.float32(0.0)
        g += e
        q += xc * e
    return np.float64(n), np.float64(g), np.float64(q)


def row_scan_rough(z, m, z_min, s, npiv, ws):
    """A first scan of a row whose every finite token is kept, with float32 exponentials and sums: the
    count, G and Q (within row_program.ROUGH_EPS), a search's first-round pivot sums (the near tier's
    exact, the one above it within the same bound), and the token list by position without ``e^-x``
    (scale NO_SCALE) with its near tier. Returns the near tier's top. Exact: the count and the extreme
    gaps, and the tier, whose tokens are tested on their float64 gaps."""
    piv = ws[1]
    hist = ws[HIST]
    hist[:] = 0.0
    meta = ws[LIST_META]
    tiered, near = tier_start(z, m, piv, npiv - 1, piv[npiv - 2])
    meta[META_NEAR_COUNT] = 0.0
    mz, sz = in_row_dtype(z, m, s)
    if (meta[META_FINITE] == 1.0) & (tiered == npiv - 1) & (abs(sz) < math.inf):
        n, g, q = rough_sums_lean(z, m, mz, sz, z_min, piv[npiv - 1], near, 3 * (npiv - 1), ws)
    else:
        n, g, q, tiered, near = rough_sums_staged(z, m, mz, sz, s, npiv, tiered, near, ws)
    near_fill(s, ws)
    near_pivots(s, piv, 0, tiered, hist, ws)
    list_set(ws, math.inf, z.shape[0], near, True, NO_SCALE)
    acc = ws[0]
    for k in range(3 * npiv):
        acc[A_PIV + k] = hist[k]
    acc[A_N] = n
    acc[A_G] = g
    acc[A_Q] = q
    acc[A_SX] = math.nan
    acc[A_SXX] = math.nan
    acc[A_DMIN] = 0.0 if n > 0.0 else math.inf
    acc[A_DMAX] = m - z_min if n > 0.0 else -math.inf
    return near


def row_widen_near(z, m, s, npiv, ws):
    """After row_scan_rough, on a row with no infinite logit: extend its near tier, unless lowered, to the
    second-to-last of the pivots now in ``ws[1]`` (first_pivots, a larger ``near``) when no more than
    WIDE_CAP tokens lie within it, and take the sums of the pivots up to it from the tier (the last
    pivot, above the tier, must be the scan's). Returns the tier's top. The tokens between the old and
    the new top are appended 64 per compare, after the old tier: each stretch stays in id order, and
    tokens of equal gap lie in one stretch (what row_gather's stable sort needs)."""
    piv = ws[1]
    meta = ws[LIST_META]
    near = meta[META_NEAR_TOP]
    top = piv[npiv - 2]
    if (meta[META_FINITE] != 1.0) or not (near < top) or near_crowded(z, m, top, WIDE_CAP):
        return near
    mz, sz = in_row_dtype(z, m, s)
    own = z[:1].copy()
    own[0] = meta[META_LOWEST]
    lo = lowest_passing(z, m, mz, sz, own[0], top, BY_GAP, 0)
    inner = lowest_passing(z, m, mz, sz, own[0], near, BY_GAP, 0)  # the old tier's tokens: z >= inner
    below = key_value(order_key(inner) - 1, inner)  # the dtype's value just below it (inner > z_min here)
    if below == inner:  # +0.0: the key below is -0.0's, the same value
        below = key_value(order_key(inner) - 2, inner)
    if below >= lo:
        near_append_blocks(z, m, 0, z.shape[0], lo, below, ws)
    near_fill(s, ws)
    meta[META_NEAR_TOP] = top
    hist = ws[HIST]
    hist[:3 * (npiv - 1)] = 0.0
    near_pivots(s, piv, 0, npiv - 1, hist, ws)
    acc = ws[0]
    for k in range(3 * (npiv - 1)):
        acc[A_PIV + k] = hist[k]
    return top


def rough_sums_staged(z, m, mz, sz, s, npiv, tiered, near, ws):
    """row_scan_rough's read of any row: each chunk's tokens staged (chunk_rough), then the near tier's
    appended and the pivots above the tier summed from the stages, the tier lowered if it outgrows
    NEAR_CAP. Returns the count, G, Q and the tier's pivot count and top."""
    piv = ws[1]
    hist = ws[HIST]
    meta = ws[LIST_META]
    stages = (ws[GAPS32], ws[ES32], ws[QS32])
    n = 0.0
    g = 0.0
    q = 0.0
    for start in range(0, z.shape[0], CHUNK):
        count = min(CHUNK, z.shape[0] - start)
        cn, cg, cq = chunk_rough(z, mz, sz, start, count, *stages)
        n += cn
        g += cg
        q += cq
        near_append_rough(z, m, start, count, near, ws)
        chunk_pivots(*stages, count, piv[:npiv], tiered, hist)
        if (tiered >= 2) & (meta[META_NEAR_COUNT] > NEAR_CAP):
            near_fill(s, ws)
            tiered, near = tier_lower(s, piv, tiered, hist, ws)
    return n, g, q, tiered, near


def rough_sums_lean(z, m, mz, sz, z_min, top, near, at, ws):
    """row_scan_rough's read of a row with no infinite logit whose near tier keeps its top (the common
    case): one loop that stores nothing, where the general one stages every token for later loops (0.9
    against 2.3 ns a token). Returns the count, G and Q; adds the count and sums of the tokens with
    ``d <= top`` (the one pivot above the tier) to ``hist[at...]``; appends the near tier's tokens (the
    chunks that hold any, found by the same loop, are listed 64 tokens per compare)."""
    hist = ws[HIST]
    lo = lowest_passing(z, m, mz, sz, z_min, near, BY_GAP, 0)
    own = z[:1].copy()
    own[0] = top
    top_z = own[0]  # rough: pivot sums above the tier are within row_program.ROUGH_EPS anyway
    own[0] = near * (1.0 + 1e-6) + 1e-30  # beyond the rounding of m - z in the row's dtype
    loose = own[0]
    vocab = z.shape[0]
    g = 0.0
    q = 0.0
    for start in range(0, vocab, CHUNK):
        count = min(CHUNK, vocab - start)
        prefetch_ahead(z, start, count, ws)
        cg, cq, cn_top, cg_top, cq_top, c_near = chunk_rough_lean(z, mz, sz, start, count, top_z, loose)
        g += cg
        q += cq
        hist[at] += cn_top
        hist[at + 1] += cg_top
        hist[at + 2] += cq_top
        if c_near > 0.0:
            near_append_blocks(z, m, start, count, lo, mz, ws)
    return np.float64(vocab), g, q


def chunk_rough_lean(z, mz, sz, start, count, top_z, loose):
    """Of row tokens ``start...`` (all finite), with float32 exponentials and sums: G, Q, the count, G and
    Q of those with gap ``<= top_z``, and how many have gap ``<= loose`` (row dtype). Tokens beyond
    EXP_LIMIT_F32 count as e^-87 (< 2e-38 each: within the error bound)."""
    g = np.float32(0.0)
    q = np.float32(0.0)
    n_top = np.float32(0.0)
    g_top = np.float32(0.0)
    q_top = np.float32(0.0)
    n_near = np.float32(0.0)
    for j in range(count):
        dz = mz - z[np.uint64(start + j)]
        xf = min(np.float32(sz * dz), EXP_LIMIT_F32)
        e = exp_neg_f32(xf)
        xe = xf * e
        g += e
        q += xe
        below = np.float32(dz <= top_z)  # a 0/1 factor: with a select, the loop did not vectorise (5.5 ns)
        n_top += below
        g_top += below * e
        q_top += below * xe
        n_near += np.float32(dz <= loose)
    return (np.float64(g), np.float64(q), np.float64(n_top), np.float64(g_top), np.float64(q_top),
            np.float64(n_near))


def near_append_blocks(z, m, start, count, lo, top, ws):
    """Append row tokens ``start...`` with ``lo <= z <= top`` (row dtype; lowest_passing's floors make
    these exactly the tokens within a gap) to the near tier, gap and id; near_fill adds their ``e^-x``."""
    meta = ws[LIST_META]
    meta[META_NEAR_COUNT] = append_within(z, m, start, count, lo, top, ws[NEAR_D], ws[NEAR_I],
                                          int(meta[META_NEAR_COUNT]))


def append_within(z, m, start, count, lo, top, gaps, ids, n):
    """Append row tokens ``start...start + count`` (64-aligned ``start``) with ``lo <= z <= top`` (row dtype)
    to ``gaps``/``ids`` after their first ``n`` entries, in id order, 64 tokens per compare (only the
    passing ones are visited, however few or many); returns the new count."""
    for block in range(start, start + count, 64):
        mask = block_within(z, block, lo, top) if block + 64 <= z.shape[0] else tail_within(z, block, lo, top)
        while mask != 0:
            i = block + trailing_zeros(mask)
            gaps[n] = m - np.float64(z[i])
            ids[n] = i
            n += 1
            mask &= mask - np.uint64(1)
    return n


def row_bins_rough(z, m, z_min, s, frac, raw, binned, ws):
    """Where, on a row whose every finite token is kept, the mass first reaches ``frac`` of the whole,
    from float32 exponentials binned by ``x`` (token_bin) and summed per bin in float64; then, exactly,
    that bin's tokens and everything before it. Returns ``(found, n, count, G, G_through, g_rest, xg_rest,
    g_raw, q_raw)``: the bin's ``n`` tokens sorted by (gap, id) in ``ws[2]``, ``ws[3]``; the float64 count
    and mass of the tokens before it, and the mass through it; and, rough, the mass of the tokens after
    it and a bound on the float32 error of their exponents, as ``Σ x·e^-x`` bounds it
    (row_program.top_p_rough bounds the error from them). The token list then holds every token up to
    that bin, with float64 ``e^-x`` at scale ``s``, for the draw. Not found when the mass reaches ``frac``
    only in the last bin. With ``raw``, the same read of the row also takes row_raw_sums' G and Q, found
    or not (the two last results; NaN without). With ``binned``, the histogram is row_max_bins' (at scale
    ``s``, taken by the row's first read), and this reads the row only for the tokens it lists."""
    sums = ws[BIN_SUMS]
    mz, sz = in_row_dtype(z, m, s)
    if binned:  # bin j below the top holds abs_bin k = origin - j, stored at k mod BINS
        origin = np.int64(abs_bin(mz, sz))
        span = origin - np.int64(abs_bin(in_row_dtype(z, z_min, s)[0], sz))
        g_raw = q_raw = math.nan
        how = BY_ABS_BIN
    else:
        if not abs(sz) < math.inf:  # a scale beyond float32 (T below ~3e-39): x = inf·0 would be NaN
            g_raw, q_raw = row_raw_sums(z, m, ws) if raw else (math.nan, math.nan)
            return False, 0, 0.0, 0.0, 0.0, 0.0, 0.0, g_raw, q_raw
        span, g_raw, q_raw = relative_histogram(z, mz, sz, raw, ws)
        origin = np.int64(0)
        how = BY_BIN
    total = 0.0
    for j in range(span + 1):
        k = bin_slot(origin, j, how)
        sums[k] *= BIN_WEIGHTS[j]
        total += sums[k]
    target = frac * total
    reached = 0.0
    b = 0
    while (b <= span) and (b < BINS - 1) and (reached + sums[bin_slot(origin, b, how)] < target):
        reached += sums[bin_slot(origin, b, how)]
        b += 1
    if (b > span) or (b == BINS - 1):
        return False, 0, 0.0, 0.0, 0.0, 0.0, 0.0, g_raw, q_raw
    g_rest = 0.0
    xg_rest = 0.0
    for j in range(b + 1, span + 1):
        g_rest += sums[bin_slot(origin, j, how)]
        xg_rest += sums[bin_slot(origin, j, how)] * (j + 1.0)  # the bin's top
    if binned:
        # abs_bin's x is s·z to within float32's rounding of s·z, not of s·(m − z): the bound grows with
        # |s·z| (at most s·max(|m|, |z_min|)) instead of with x, and the scale is offset by under a bin
        g_rest *= math.exp(origin / np.float64(BIN_SCALE) - s * m)
        xg_rest = g_rest * s * max(abs(m), abs(z_min))
    else:
        xg_rest /= np.float64(BIN_SCALE)
    lo = lowest_passing(z, m, mz, sz, z_min, b, how, origin)
    hi = lowest_passing(z, m, mz, sz, z_min, b - 1, how, origin) if b > 0 else mz + np.float32(math.inf)
    n, count, g, g_through = bins_through(z, m, mz, s, lo, hi, ws)
    return True, n, count, g, g_through, g_rest, xg_rest, g_raw, q_raw


def bin_slot(origin, j, how):
    """Where bin ``j`` (counted from the top) lies in the histogram: at ``j`` (BY_BIN), or at the absolute
    bin ``origin - j`` mod BINS (BY_ABS_BIN)."""
    return np.uint64(j) if how == BY_BIN else np.uint64((origin - j) & BIN_MASK)


def relative_histogram(z, mz, sz, raw, ws):
    """row_bins_rough's read of the row: the histogram by token_bin into ``ws[BIN_SUMS]`` (each bin's mass
    relative to its weight), with ``raw`` row_raw_sums' G and Q (NaN without); returns the highest bin
    with a token (a row spans ~700 of 4096: the loops over bins stop there), G and Q."""
    es = ws[ES32]
    bins = ws[GAPS32].view(np.int32)  # the float32 stage's memory, holding int32 bins
    sums = ws[BIN_SUMS]
    vocab = z.shape[0]
    sums[:] = 0.0
    g_raw = 0.0
    q_raw = 0.0
    used = 0
    for start in range(0, vocab, CHUNK):
        count = min(CHUNK, vocab - start)
        prefetch_ahead(z, start, count, ws)
        cg, cq, top = chunk_bins(z, mz, sz, start, count, bins, es, raw)
        g_raw += cg
        q_raw += cq
        used = max(used, top)
        scatter_bins(sums, bins, es, count)
    if not raw:
        g_raw = q_raw = math.nan
    return np.int64(used), g_raw, q_raw


def scatter_bins(sums, bins, es, count):
    """Add each staged token's mass to its bin: scalar, about 0.6 ns a token (an unsigned index: no
    wraparound test)."""
    for j in range(count):
        sums[np.uint64(np.uint32(bins[j]))] += np.float64(es[j])


def row_max_bins(z, s, raw, ws):
    """row_max's results, and, from the same read of the row, row_bins_rough's histogram at scale ``s``
    before the maximum is known: by abs_bin, each bin's mass relative to ``e^{k/32}``, into
    ``ws[BIN_SUMS]``; with ``raw``, row_raw_sums' G and Q too. Returns ``(z_max, n_finite, z_min, binned,
    G, Q)``; ``binned`` is false when the histogram cannot serve (an infinite logit, a scale beyond
    float32, or a row wider than BINS - 2 bins), the sums are NaN without ``raw`` or on a row with an
    infinite logit, and row_max's own read then gives the rest. Top-p's histogram is its read of the whole
    row: taking it here spares the separate read that finds the maximum first. The raw sums, which are
    relative to the maximum, are taken relative to the largest logit so far and rescaled when it grows
    (a few times a row)."""
    own = z[:1].copy()
    own[0] = s
    sz = own[0]
    if not abs(sz * BIN_SCALE) < math.inf:
        return max_unbinned(z, raw, ws)
    meta = ws[LIST_META]
    meta[META_VALID] = 0.0  # a new row: the list belongs to another
    es = ws[ES32]
    bins = ws[GAPS32].view(np.int32)
    sums = ws[BIN_SUMS]
    sums[:] = 0.0
    vocab = z.shape[0]
    top_key = order_key(z[0])
    low_key = top_key
    ref = z[0]  # the raw sums' reference: the largest logit so far
    g_raw = 0.0
    q_raw = 0.0
    for start in range(0, vocab, CHUNK):
        count = min(CHUNK, vocab - start)
        prefetch_ahead(z, start, count, ws)
        if raw:
            chunk_ref = chunk_top(z, start, count)
            if chunk_ref > ref:
                grown = np.float64(chunk_ref) - np.float64(ref)
                shrink = math.exp(-grown)  # Q = Σ d·e^-d gains each token's growth of d
                q_raw = (q_raw + grown * g_raw) * shrink
                g_raw *= shrink
                ref = chunk_ref
        chunk_top_key, chunk_low_key, cg, cq = chunk_abs_bins(z, sz, start, count, bins, es, ref, raw)
        top_key = max(top_key, chunk_top_key)
        low_key = min(low_key, chunk_low_key)
        g_raw += cg
        q_raw += cq
        scatter_bins(sums, bins, es, count)
    top = key_value(top_key, z[0])
    lowest = key_value(low_key, z[0])
    if not ((top < math.inf) & (lowest > -math.inf)):
        return max_unbinned(z, raw, ws)
    if not raw:
        g_raw = q_raw = math.nan
    meta[META_FINITE] = 1.0
    meta[META_LOWEST] = lowest
    k_top = np.float64(abs_bin(top, sz))
    k_low = np.float64(abs_bin(lowest, sz))
    fits = (abs(k_top) < ABS_BIN_LIMIT) & (abs(k_low) < ABS_BIN_LIMIT) & (k_top - k_low <= BINS - 2)
    return np.float64(top), vocab, np.float64(lowest), fits, g_raw, q_raw


def max_unbinned(z, raw, ws):
    """row_max_bins' results from row_max (and row_raw_sums with ``raw``) where its histogram cannot serve."""
    m, n, z_min = row_max(z, ws)
    g_raw, q_raw = row_raw_sums(z, m, ws) if raw and n > 0 else (math.nan, math.nan)
    return m, n, z_min, False, g_raw, q_raw


def abs_bin(v, sz):
    """row_max_bins' bin of a logit ``v`` (row dtype) at scale ``sz``: ``⌈32·s·v⌉`` of abs_position (as
    float32). Monotone in ``v``."""
    return np.ceil(abs_position(v, sz))


def abs_position(v, sz):
    """``32·s·v`` of a logit ``v`` (row dtype) in float32: the one rounding that abs_bin and the histogram's
    stage (chunk_abs_bins) share, so that a token lies in the bin lowest_passing's bisection tests."""
    return np.float32((sz * BIN_SCALE) * v)


def chunk_abs_bins(z, sz, start, count, bins, es, ref, raw):
    """Row tokens ``start...``: their abs_bin mod BINS (int32; any, for an infinite logit) and their mass
    relative to their bin's ``e^{k/32}``, ``e^-r`` of their offset ``r < 1/32`` below the bin's top
    (in_bin_mass, as chunk_bins); returns the order_key of the chunk's largest and smallest logits (which
    vectorise where a float max does not) and, with ``raw``, the raw sums relative to ``ref`` (row dtype,
    at least the chunk's largest logit; zeros without)."""
    top = order_key(z[start])
    lowest = top
    g = np.float32(0.0)
    q = np.float32(0.0)
    for j in range(count):
        v = z[np.uint64(start + j)]
        t = abs_position(v, sz)
        k = np.ceil(t)
        es[j] = in_bin_mass(k - t)
        bins[j] = np.int32(k) & BIN_MASK
        key = order_key(v)
        top = max(top, key)
        lowest = min(lowest, key)
        if raw:
            xf, e_raw = raw_token(ref - v)
            g += e_raw
            q += xf * e_raw
    return top, lowest, np.float64(g), np.float64(q)


def token_bin(dz, sz):
    """The histogram bin of a token of gap ``dz`` (row dtype) at scale ``sz``: ``⌊32·x⌋`` of its float32
    ``x``, LAST_BIN from 128 nats on and for an infinite logit. Monotone in the gap, so a bin's tokens
    are a run of the (gap, id) order."""
    return np.float32(np.int32(bin_position(dz, sz)))  # >= 0: truncation floors


def bin_position(dz, sz):
    """``32·x`` of a token's float32 ``x`` (the same rounding: 32 is a power of two), at most LAST_BIN (an
    infinite logit's: its gap is -inf above the maximum, +inf for a masked one, hence the absolute
    value; a finite gap is >= 0)."""
    return min(abs(np.float32((sz * BIN_SCALE) * dz)), LAST_BIN)


def chunk_bins(z, mz, sz, start, count, bins, es, raw):
    """The bins (int32, which the scatter reads without a conversion: 15% of the histogram's time) of
    row tokens ``start...`` and their masses relative to their bin's weight (``e^-r``), and with ``raw``
    their raw sums (chunk_raw_sums; zeros without); returns those and the highest bin."""
    g = np.float32(0.0)
    q = np.float32(0.0)
    top = np.int32(0)
    for j in range(count):
        dz = mz - z[np.uint64(start + j)]
        t = bin_position(dz, sz)
        ki = np.int32(t)
        es[j] = in_bin_mass(t - np.float32(ki))  # exact: t − k by Sterbenz's lemma
        bins[j] = ki
        top = max(top, ki)
        if raw:
            xf, e_raw = raw_token(dz)
            g += e_raw
            q += xf * e_raw
    return np.float64(g), np.float64(q), np.int64(top)


def in_bin_mass(u):
    """``e^-r`` for an offset ``r = u/32`` into a histogram bin, ``0 <= u < 1`` in bins: a float32 cubic in
    ``r`` (truncation error r⁴/24 < 4e-8), no range reduction. Its coefficients carry the 1/32, which
    spares the stage a multiply a token; each is a power of two times the cubic's in ``r``, so every
    product and rounding is that one's scaled by a power of two: the same float32 results."""
    c1 = np.float32(1.0 / 32.0)
    c2 = np.float32(0.5 / 32.0 ** 2)
    c3 = np.float32(np.float32(1.0 / 6.0) * np.float32(1.0 / 32.0 ** 3))
    return np.float32(1.0) - u * (c1 - u * (c2 - u * c3))


def passes(v, m, mz, sz, bound, how, origin):
    """Whether a logit ``v`` (row dtype) lies at a gap of at most ``bound`` from ``m`` (BY_GAP: float64, as
    the exact passes test it), in bin ``bound`` or below (BY_BIN: token_bin's), or at most ``bound`` bins
    below bin ``origin`` (BY_ABS_BIN: abs_bin's): each holds for every logit above one that does."""
    if how == BY_GAP:
        return m - np.float64(v) <= bound
    if how == BY_BIN:
        return token_bin(mz - v, sz) <= bound
    return abs_bin(v, sz) >= origin - bound


def lowest_passing(z, m, mz, sz, z_min, bound, how, origin):
    """The lowest value of the row's dtype, down to the row's lowest finite logit, that passes (see
    passes): the row's tokens that pass are exactly those at or above it. Bisection over the dtype's
    values (halving the interval until no value lies inside)."""
    own = z[:1].copy()
    own[0] = z_min
    lo = own[0]
    if passes(lo, m, mz, sz, bound, how, origin):
        return lo
    hi = mz
    while True:
        own[0] = 0.5 * np.float64(lo) + 0.5 * np.float64(hi)  # rounds to a value strictly inside, if any
        mid = own[0]
        if (mid == lo) | (mid == hi):
            return hi
        if passes(mid, m, mz, sz, bound, how, origin):
            hi = mid
        else:
            lo = mid


def bins_through(z, m, mz, s, lo, hi, ws):
    """List every token with ``lo <= z <= m`` (gap, id and float64 ``e^-x``: the token list, by id; a +inf
    logit is no token), and gather those with ``z < hi`` among them sorted (``n``); returns ``n``, the
    count and mass of the others, and the mass of all (``mz``, ``lo``, ``hi``: in the row's dtype)."""
    list_d = ws[LIST_D]
    list_i = ws[LIST_I]
    tmp_d = ws[TMP_D]
    tmp_i = ws[TMP_I]
    listed, n = append_split(z, m, lo, hi, mz, ws[LIST_META][META_FINITE] == 1.0, list_d, list_i, tmp_d, tmp_i)
    g_all = list_exps(s, listed, ws)
    cand_d = ws[2]
    cand_i = ws[3]
    sort_by_gap(tmp_d, tmp_i, n, cand_d, cand_i, ws[NEAR_E])  # scratch: the near tier is left empty (below)
    g_bin = 0.0
    for j in range(n):
        g_bin += exp_neg(s * cand_d[j])
    meta = ws[LIST_META]
    # bin b's tokens have the list's largest gaps (n >= 1: the bin has mass)
    list_set(ws, cand_d[n - 1], listed, -math.inf, False, s)
    meta[META_NEAR_COUNT] = 0.0
    return n, np.float64(listed - n), g_all - g_bin, g_all


def append_split(z, m, lo, hi, top, finite, gaps, ids, low_gaps, low_ids):
    """append_within over the whole row into an empty list that also copies the entries with a gap above
    ``m - hi`` (the lowest logits, below ``hi``) to ``low_gaps``/``low_ids``, both in id order; returns both
    counts. Splitting the list afterwards read it all again for the few hundred tokens of one bin. On a
    row with no infinite logit (``finite``) no token lies above ``top``, the maximum: one compare a token."""
    n = 0
    n_low = 0
    d_hi = m - np.float64(hi)
    for block in range(0, z.shape[0], 64):
        if block + 64 > z.shape[0]:
            mask = tail_within(z, block, lo, top)
        elif finite:
            mask = block_at_least(z, block, lo)
        else:
            mask = block_within(z, block, lo, top)
        while mask != 0:
            i = block + trailing_zeros(mask)
            d = m - np.float64(z[i])
            gaps[np.uint64(n)] = d  # unsigned: no wraparound test, a third of this loop's instructions
            ids[np.uint64(n)] = i
            n += 1
            # written whatever d, kept by the count: a branch on the few hundred of 17,000 cost the
            # listing 8% in mispredictions
            low_gaps[np.uint64(n_low)] = d
            low_ids[np.uint64(n_low)] = i
            n_low += np.int64(d > d_hi)
            mask &= mask - np.uint64(1)
    return n, n_low


def sort_by_gap(gaps, ids, n, sorted_gaps, sorted_ids, counts):
    """The first ``n`` entries sorted by gap, ties kept in their order (stable), into ``sorted_*``: a counting
    sort into ``n/4`` buckets of equal width over the gaps' range (``counts``: scratch of ``n`` entries),
    then an insertion sort, which moves each entry only within its bucket. A mergesort of a
    bin's ~400 tokens took 3% of a top-p row."""
    if n <= 1:
        for j in range(n):
            sorted_gaps[j] = gaps[j]
            sorted_ids[j] = ids[j]
        return
    lo = gaps[0]
    hi = gaps[0]
    for j in range(n):
        lo = min(lo, gaps[j])
        hi = max(hi, gaps[j])
    buckets = min(max(n // 4, 1), counts.shape[0] - 1)
    scale = buckets / (hi - lo) if hi > lo else 0.0
    if not scale < math.inf:  # a range of subnormal width
        scale = 0.0
    counts[:buckets + 1] = 0.0
    for j in range(n):
        counts[min(int((gaps[j] - lo) * scale), buckets - 1) + 1] += 1.0
    for k in range(buckets):
        counts[k + 1] += counts[k]
    for j in range(n):  # monotone in the gap: an entry lands after every smaller gap's bucket
        k = min(int((gaps[j] - lo) * scale), buckets - 1)
        at = int(counts[k])
        counts[k] += 1.0
        sorted_gaps[at] = gaps[j]
        sorted_ids[at] = ids[j]
    for j in range(1, n):
        d = sorted_gaps[j]
        i = sorted_ids[j]
        k = j
        while k > 0 and sorted_gaps[k - 1] > d:
            sorted_gaps[k] = sorted_gaps[k - 1]
            sorted_ids[k] = sorted_ids[k - 1]
            k -= 1
        sorted_gaps[k] = d
        sorted_ids[k] = i


def tail_within(z, start, lo, top):
    """block_within for the row's last tokens, fewer than 64."""
    mask = np.uint64(0)
    for j in range(z.shape[0] - start):
        mask |= np.uint64(1 if (z[start + j] >= lo) & (z[start + j] <= top) else 0) << np.uint64(j)
    return mask


def list_exps(s, count, ws):
    """The float64 ``e^-x`` of the list's first ``count`` entries at scale ``s``, and their sum."""
    list_d = ws[LIST_D]
    list_e = ws[LIST_E]
    g = 0.0
    for j in range(count):
        e = exp_neg(s * list_d[j])
        list_e[j] = e
        g += e
    return g


def near_append_rough(z, m, start, count, near, ws):
    """Append the chunk's tokens with ``d <= near`` to the near tier (gap and id; near_fill adds their
    ``e^-x``): those the float32 gaps place near it are tested on their float64 gaps."""
    meta = ws[LIST_META]
    gaps = ws[GAPS32]
    n_near = int(meta[META_NEAR_COUNT])
    loose = near * (1.0 + 1e-6) + 1e-30  # beyond float32's rounding of m - z
    for j in range(count):
        if gaps[j] <= loose:
            d = m - np.float64(z[start + j])
            if d <= near:
                ws[NEAR_D][n_near] = d
                ws[NEAR_I][n_near] = start + j
                n_near += 1
    meta[META_NEAR_COUNT] = n_near


def near_fill(s, ws):
    """The near tier's ``e^-x`` (float64) at scale ``s``."""
    near_d = ws[NEAR_D]
    near_e = ws[NEAR_E]
    for j in range(int(ws[LIST_META][META_NEAR_COUNT])):
        near_e[j] = exp_neg(s * near_d[j])


def race_screen(key, ids, start, count, from_list, es, weight, hits):
    """How many tokens of a chunk (ids ``ids[start...]`` or ``start...``, ``es`` their ``e^-x``) might win the
    race against a leader of weight ``weight`` (race_try), marked 1 in ``hits`` (int32, the others 0): one
    vectorised pass over the high words of their uniforms, since a token wins only if ``u > 1 − e^-x ·
    weight`` and ``u <= ((high >> 1) + 1) · 2⁻³¹``. The leader's weight only falls as the chunk is raced,
    so an unmarked token loses to every later leader too: racing the marked tokens alone spares the full
    uniform of the others in a chunk that has any (a top-p draw at [64, 151936] put about 1,000 of its
    17,000 tokens through race_try without the marks; with them the draw takes 6% less time). A token of
    zero mass before any leader (0 · inf) is not a candidate, as in race_try."""
    cut = weight * RACE_MARGIN
    total = 0
    for j in range(count):
        token = np.int32(ids[np.uint64(start + j)]) if from_list else start + j
        ceiling = (np.float64(high_half(key, token)) + 1.0) * 2.0 ** -31
        hit = np.int32(1) if ceiling > 1.0 - np.float64(es[j]) * cut - 1e-15 else np.int32(0)
        hits[j] = hit
        total += hit
    return total


def race_try(key, i, x, e, best, weight, token):
    """Token ``i`` (scaled gap ``x``, ``e ≈ e^-x``) in the exponential race so far (``best`` score,
    ``weight = e^-best``, ``token``): the new ``(best, weight, token)``. E = -ln u < a = e^-x · weight
    needs u > e^-a >= 1 - a, so most tokens fail without a logarithm; the margin covers a float32
    ``e^-x`` (x rounded to float32 at up to 87 nats: relative error < 3e-5)."""
    u = token_uniform(key, i)
    if u > 1.0 - e * weight * RACE_MARGIN - 1e-15:
        score = race_score(-x, u)
        if score > best or (score == best and i < token) or token < 0:
            return score, math.exp(-score), i
    return best, weight, token


def row_write(z, m, s, dt, ilo, ihi, shift, limit, out, ws):
    for i in range(z.shape[0]):
        v = np.float64(z[i])
        d = m - v
        inside = (d < dt) | ((d == dt) & (i >= ilo) & (i <= ihi))
        out[i] = min(max(s * (v - shift), -limit), limit) if inside else -math.inf


def run_chain(z, ops, prm, keys, out, tel, mode, limit, threads, rows_f, rows_i):
    """Apply the program to every row of ``z`` (``[batch, vocab]``) on ``threads`` threads (Numba's
    count, passed in: reading it here would keep the function out of the cache); see
    :mod:`entrodec.kernels.program`. ``rows_f``/``rows_i`` (float64 ``[>= threads, ROW_F, vocab + PAD]``
    and int64 ``[>= threads, ROW_I, vocab + PAD]``, any contents) hold each thread's vocabulary-sized work
    arrays; the caller keeps them from call to call, since fresh ones would be page-faulted in at every
    step, which at batch 1 costs a good part of the pass itself."""
    batch, vocab = z.shape
    small = small_arrays(threads)
    writes = out.shape[0] == batch
    for b in prange(batch):
        ws = thread_ws(numba.get_thread_id(), vocab, small, rows_f, rows_i)
        if b + 1 < batch:
            ws[LIST_META][META_AHEAD] = np.float64(address_of(z[b + 1]))  # exact: addresses lie below 2^53
        key = step_key(keys[b, 0], keys[b, 1])
        run_row(z[b], ops, prm[b], key, out[b] if writes else out[0], tel[b], mode, limit, ws)


def run_one(z, ops, prm, seed, step, out, tel, mode, limit, rows_f, rows_i):
    """:func:`run_chain` for a batch of one row, on the calling thread (a parallel region would only add
    the wake-up of a thread pool that has nothing else to do), its key's seed and step as numbers."""
    ws = thread_ws(0, z.shape[1], small_arrays(1), rows_f, rows_i)
    run_row(z[0], ops, prm[0], step_key(seed, step), out[0], tel[0], mode, limit, ws)


def small_arrays(threads):
    """Each thread's small work arrays, padded so that no two threads' share a cache line."""
    size = acc_size(PIVOTS)
    return (np.empty((threads, size + PAD)), np.empty((threads, PIVOTS + PAD)), np.empty((threads, size + PAD)),
            np.empty((threads, 3, CHUNK + PAD)), np.empty((threads, 3 * PIVOTS + PAD)),
            np.empty((threads, META_SIZE + PAD)), np.empty((threads, 3, CHUNK + 2 * PAD), dtype=np.float32),
            np.empty((threads, BINS + PAD)))


def thread_ws(t, vocab, small, rows_f, rows_i):
    """Thread ``t``'s work arrays, in the order of the ``ws`` indices above."""
    accs, pivs, caches, chunks, hists, metas, chunks32, bin_sums = small
    size = acc_size(PIVOTS)
    f = rows_f[t]
    metas[t, META_AHEAD] = 0.0
    return (accs[t, :size], pivs[t, :PIVOTS], f[0, :vocab], rows_i[t, 0, :vocab], caches[t, :size], f[1, :vocab],
            rows_i[t, 1, :vocab], chunks[t, 0, :CHUNK], chunks[t, 1, :CHUNK], chunks[t, 2, :CHUNK],
            hists[t, :3 * PIVOTS], f[2, :vocab], f[3, :vocab],
            f[4, :vocab], metas[t, :META_SIZE], f[5, :vocab], f[6, :vocab], f[7, :vocab], chunks32[t, 0, :CHUNK],
            chunks32[t, 1, :CHUNK], chunks32[t, 2, :CHUNK], bin_sums[t, :BINS])


# Reassociation lets LLVM vectorise the reductions; logits are never NaN, but nothing may assume away
# inf (masked tokens).
_FASTMATH = {"row_max": {"reassoc", "nsz", "nnan"},
             "plain_extremes": {"reassoc", "nsz", "nnan"}, "chunk_top": {"reassoc", "nsz", "nnan"},
             "chunk_pivots": {"reassoc", "contract", "nsz", "nnan"}, "chunk_counts": {"reassoc", "nsz", "nnan"},
             "chunk_gaps": {"reassoc", "nsz", "nnan"},
             "near_pivots": {"reassoc", "contract", "nsz", "nnan"},
             "chunk_raw_sums": {"reassoc", "contract", "nsz"}, "chunk_rough": {"reassoc", "contract", "nsz", "nnan"},
             "chunk_rough_lean": {"reassoc", "contract", "nsz", "nnan"}, "chunk_at_least": {"reassoc", "nsz", "nnan"},
             "chunk_whole_row": {"reassoc", "contract", "nsz", "nnan"}, "rough_token": {"contract", "nsz", "nnan"},
             "chunk_bins": {"reassoc", "contract", "nsz", "nnan"},
             "chunk_abs_bins": {"reassoc", "contract", "nsz", "nnan"}, "in_bin_mass": {"contract", "nsz", "nnan"},
             "list_exps": {"reassoc", "contract", "nsz", "nnan"},
             "chunk_from_row": {"reassoc", "contract", "nsz", "nnan"}, "chunk_sums": {"reassoc", "contract", "nsz", "nnan"},
             "chunk_from_list": {"reassoc", "contract", "nsz", "nnan"},
             "chunk_draw_list": {"reassoc", "contract", "nsz", "nnan"}, "add_token": {"reassoc", "contract", "nsz", "nnan"},
             "exp_neg": {"contract"}, "exp_neg_f32": {"contract"}}


def _decorate(function):
    # error_model="numpy": IEEE arithmetic (inf, nan) as on the GPU, never a Python ZeroDivisionError
    if function.__name__ == "run_chain":
        return numba.njit(parallel=True, cache=True, error_model="numpy")(function)
    return numba.njit(cache=True, error_model="numpy", fastmath=_FASTMATH.get(function.__name__, False))(function)


_SOURCES = [rules, rng, program, row_program, sys.modules[__name__]]
with numba_cache_in(kernel_cache_dir(_SOURCES)):
    COMPILED = instantiate(_SOURCES, _decorate)
