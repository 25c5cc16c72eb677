"""Run a kernel program on torch tensors: CPU tensors through the Numba CPU backend (zero-copy NumPy
views), CUDA tensors through the Numba-CUDA backend on torch's current stream.

fp16/bf16 logits are read as float32 (one upcast), and the processed logits are returned in the input
dtype, saturated at its largest finite value.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache

import numba
import numpy as np
import torch

from . import program


def backend_for(scores: torch.Tensor) -> str | None:
    """``"cpu"``, ``"cuda"`` or ``None`` (no kernel for this tensor: other devices, integer dtypes, or
    CUDA without a usable Numba-CUDA)."""
    if scores.dim() != 2 or not scores.is_floating_point() or scores.shape[1] == 0:
        return None
    # is_cpu/is_cuda, not device.type: Tensor.device builds a Python object, which right after a forward
    # pass costs ~20 µs (measured: 27 against 7.5 µs for is_cpu)
    if scores.is_cpu:
        return "cpu"
    if scores.is_cuda and cuda_available():
        return "cuda"
    return None


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover - numba always ships numba.cuda or numba-cuda provides it
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver or toolkit means no CUDA kernels, never a crash
        return False


_cpu_lock = threading.Lock()


@lru_cache(maxsize=None)
def _largest(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def run_program(
    scores: torch.Tensor,
    ops: Sequence[int],
    params: torch.Tensor,
    mode: int,
    seeds: torch.Tensor | None = None,
    steps: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Apply ``ops`` with per-row ``params`` (float64 ``[batch, n_ops, SLOTS]``) to ``scores``.

    Returns ``(processed logits or None, telemetry)``; telemetry is float64 ``[batch, width]`` on the
    scores' device (layout in :mod:`entrodec.kernels.program`). ``seeds``/``steps`` (int64 ``[batch]``)
    key the draw in DRAW mode.
    """
    backend = backend_for(scores)
    if backend is None:
        raise ValueError(f"no kernel backend for a {scores.dtype} tensor of shape {tuple(scores.shape)} on {scores.device}")
    work, mode = _readable(scores, mode)
    run = _run_cpu if backend == "cpu" else _run_cuda
    out, tel = run(work, ops, params, mode, seeds, steps, _largest(scores.dtype))
    if out is None or out.dtype == scores.dtype:
        return out, tel
    return out.to(scores.dtype), tel


def run_cpu_step(
    scores: torch.Tensor, ops: np.ndarray, params: np.ndarray, mode: int, seeds: np.ndarray, steps: int | np.ndarray
) -> np.ndarray:
    """:func:`run_program` without WRITE for a CPU tensor, on NumPy arguments (int64 ``ops``, float64
    ``params``, ``[batch]`` ``seeds`` and ``steps``, or one int for every row): the telemetry, float64
    ``[batch, width]``. The shortest way from a decoding step's logits to the kernel."""
    work, mode = _readable(scores, mode)
    return _cpu_pass(work.numpy(), ops, params, mode, seeds, steps, _largest(scores.dtype), None)


def _readable(scores: torch.Tensor, mode: int) -> tuple[torch.Tensor, int]:
    """The logits as the kernels read them (float32 or float64, contiguous, outside autograd) and the
    mode bits that their dtype implies."""
    work = scores.detach() if scores.requires_grad else scores
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    if not work.is_contiguous():
        work = work.contiguous()
    return work, (mode if work.dtype == torch.float64 else mode | program.FLOAT32_PARAMS)


def _run_cpu(work, ops, params, mode, seeds, steps, limit):
    z = work.numpy()
    out = np.empty_like(z) if mode & program.WRITE else None
    tel = _cpu_pass(z, np.asarray(ops, dtype=np.int64), np.ascontiguousarray(params.numpy(), dtype=np.float64), mode,
                    0 if seeds is None else seeds.numpy(), 0 if steps is None else steps.numpy(), limit, out)
    return (None if out is None else torch.from_numpy(out)), torch.from_numpy(tel)


def _cpu_pass(z, ops, params, mode, seeds, steps, limit, out):
    # NumPy buffers: at batch 1 the pass over a row takes well under a millisecond, and a handful of
    # torch allocations and copies would cost a good part of that again.
    tel = np.empty((z.shape[0], program.telemetry_width(len(ops))))
    out = _placeholder(z.dtype) if out is None else out
    if z.shape[0] == 1:  # the row's seed and step go in as numbers: a keys array costs ~20 µs cold
        with _cpu_lock:
            _run_one(z, ops, params, _first(seeds), _first(steps), out, tel, mode, limit)
        return tel
    keys = np.empty((z.shape[0], 2), dtype=np.int64)
    keys[:, 0] = seeds
    keys[:, 1] = steps
    run_cpu_arrays(z, ops, params, keys, out, tel, mode, limit)
    return tel


def _first(values: int | np.ndarray) -> int | np.int64:
    return values if isinstance(values, int) else values[0]


@lru_cache(maxsize=None)
def _placeholder(dtype: np.dtype) -> np.ndarray:
    # the ``out`` of a pass that writes no logits (never written)
    return np.empty((1, 1), dtype=dtype)


def _run_one(z, ops, params, seed, step, out, tel, mode, limit):
    # a batch of one row runs on this thread: no pool to wake, no thread count to read, change and
    # restore (the caller holds _cpu_lock)
    from .cpu import COMPILED

    rows_f, rows_i = _cpu_buffers(1, z.shape[1])
    COMPILED["run_one"](z, ops, params, seed, step, out, tel, mode, limit, rows_f, rows_i)


def run_cpu_arrays(
    z: np.ndarray, ops: np.ndarray, params: np.ndarray, keys: np.ndarray, out: np.ndarray, tel: np.ndarray,
    mode: int, limit: float,
) -> None:
    """The CPU backend on NumPy arrays: ``z`` ``[batch, vocab]``, ``ops`` int64, ``params`` float64
    ``[batch, n_ops, SLOTS]`` (C-contiguous), ``keys`` int64 ``[batch, 2]`` (seed, step), ``out`` ``[batch, vocab]`` in
    WRITE mode (else ``[1, 1]``), ``tel`` float64 ``[batch, width]``."""
    from .cpu import COMPILED

    batch = z.shape[0]
    with _cpu_lock:  # one parallel region at a time (Numba's workqueue layer is not re-entrant), one user of the buffers
        if batch == 1:
            _run_one(z, ops, params, keys[0, 0], keys[0, 1], out, tel, mode, limit)
            return
        threads = numba.get_num_threads()
        rows_f, rows_i = _cpu_buffers(threads, z.shape[1])
        used = min(threads, batch)
        if used < threads:  # fewer rows than threads: don't wake threads that would find no row
            numba.set_num_threads(used)
        try:
            COMPILED["run_chain"](z, ops, params, keys, out, tel, mode, limit, used, rows_f, rows_i)
        finally:
            if used < threads:
                numba.set_num_threads(threads)


@lru_cache(maxsize=4)  # a vocabulary or two (model switching), each at batch 1 and in parallel
def _cpu_buffers(threads: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    # kept for the process's life: the same memory the kernel used to allocate (and fault in) per call
    from .cpu import PAD, ROW_F, ROW_I

    return np.empty((threads, ROW_F, vocab + PAD)), np.empty((threads, ROW_I, vocab + PAD), dtype=np.int64)


def _run_cuda(work, ops, params, mode, seeds, steps, limit):
    from .cuda import launch

    batch = work.shape[0]
    device = work.device
    tel = torch.empty(batch, program.telemetry_width(len(ops)), dtype=torch.float64, device=device)
    out = torch.empty_like(work) if mode & program.WRITE else torch.empty(1, 1, dtype=work.dtype, device=device)
    keys = torch.zeros(batch, 2, dtype=torch.int64, device=device)
    if seeds is not None:
        keys[:, 0] = seeds
    if steps is not None:
        keys[:, 1] = steps
    op_codes = torch.tensor(list(ops), dtype=torch.int64, device=device)
    launch(work, op_codes, params.to(device=device, dtype=torch.float64).contiguous(), keys, out, tel, mode, limit)
    return (out if mode & program.WRITE else None), tel
