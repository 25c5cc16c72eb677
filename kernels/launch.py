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
import torch

from . import program


def backend_for(scores: torch.Tensor) -> str | None:
    """``"cpu"``, ``"cuda"`` or ``None`` (no kernel for this tensor: other devices, integer dtypes, or
    CUDA without a usable Numba-CUDA)."""
    if scores.dim() != 2 or not scores.is_floating_point() or scores.shape[1] == 0:
        return None
    if scores.device.type == "cpu":
        return "cpu"
    if scores.device.type == "cuda" and cuda_available():
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
    work = scores.detach()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    work = work.contiguous()
    batch, _ = work.shape
    device = work.device
    limit = float(torch.finfo(scores.dtype).max)
    if work.dtype != torch.float64:
        mode |= program.FLOAT32_PARAMS
    tel = torch.empty(batch, program.telemetry_width(len(ops)), dtype=torch.float64, device=device)
    out = torch.empty_like(work) if mode & program.WRITE else torch.empty(1, 1, dtype=work.dtype, device=device)
    keys = torch.zeros(batch, 2, dtype=torch.int64, device=device)
    if seeds is not None:
        keys[:, 0] = seeds
    if steps is not None:
        keys[:, 1] = steps
    op_codes = torch.tensor(list(ops), dtype=torch.int64, device=device)
    params = params.to(device=device, dtype=torch.float64).contiguous()
    if backend == "cpu":
        from .cpu import COMPILED

        with _cpu_lock:  # one parallel region at a time: Numba's workqueue layer is not re-entrant
            COMPILED["run_chain"](
                work.numpy(), op_codes.numpy(), params.numpy(), keys.numpy(), out.numpy(), tel.numpy(),
                mode, limit, numba.get_num_threads(),
            )
    else:
        from .cuda import launch

        launch(work, op_codes, params, keys, out, tel, mode, limit)
    if not mode & program.WRITE:
        return None, tel
    return (out if out.dtype == scores.dtype else out.to(scores.dtype)), tel

