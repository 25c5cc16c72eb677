"""Running processors through the fused kernels (entrodec.kernels) when every one of them has a kernel.

A processor opts in with ``kernel_op(input_ids, scores) -> KernelOp`` (its op code and per-row values,
scalars or ``[batch]`` tensors) and may take back what the kernel measured with
``after_kernel(input_ids, temperature, entropy)`` (``[batch]`` tensors: the temperature it applied and the entropy
it saw, NaN where it has none). ``process_fused`` and ``sample_fused`` return ``None`` whenever the
kernels cannot run, and the caller falls back to the torch reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import kernels
from ..kernels import program
from .draw import greedy
from .rowparams import check_rows
from .telemetry import StepTelemetry, measure_step


class KernelOp(NamedTuple):
    code: int
    values: dict[str, Any]  # per slot, in order: the parameter's name and a number or a [batch] tensor


class Draw(NamedTuple):
    """One decoding step's tokens (``[batch]``, on the scores' device) and telemetry (on the CPU)."""

    tokens: torch.Tensor
    telemetry: StepTelemetry


def kernel_program(processors: Sequence[Any], input_ids, scores: torch.Tensor) -> tuple[list[int], torch.Tensor] | None:
    """The kernel program of ``processors`` for ``scores``: op codes and per-row parameters (float64
    ``[batch, n_ops, SLOTS]``), or ``None`` when the kernels cannot run them."""
    ops = _kernel_ops(processors, input_ids, scores)
    return None if ops is None else ([op.code for op in ops], _params(ops, scores.shape[0]))


def _kernel_ops(processors: Sequence[Any], input_ids, scores: torch.Tensor) -> list[KernelOp] | None:
    if not processors or not kernels.enabled() or kernels.backend_for(scores) is None:
        return None
    ops = []
    for processor in processors:
        make = getattr(processor, "kernel_op", None)
        op = make(input_ids, scores) if make is not None else None
        if op is None:
            return None
        ops.append(op)
    return ops


def _params(ops: Sequence[KernelOp], batch: int) -> torch.Tensor:
    # filled in NumPy: a torch op per slot would cost more than the kernel pass itself at batch 1
    params = np.zeros((batch, len(ops), program.SLOTS))
    for index, op in enumerate(ops):
        for slot, (name, value) in enumerate(op.values.items()):
            if isinstance(value, torch.Tensor):
                check_rows(value, batch, name)
                value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
            params[:, index, slot] = value
    return torch.from_numpy(params)


def _run(processors, input_ids, scores, mode, seeds=None, steps=None):
    compiled = kernel_program(processors, input_ids, scores)
    if compiled is None:
        return None
    out, tel = kernels.run_program(scores, *compiled, mode, seeds, steps)
    for index, processor in enumerate(processors):  # device tensors: only HAPO's windows read them back
        after = getattr(processor, "after_kernel", None)
        if after is not None:
            after(input_ids, tel[:, program.op_temperature_column(index)], tel[:, program.op_entropy_column(index)])
    return out, tel


def process_fused(processors: Sequence[Any], input_ids, scores: torch.Tensor) -> torch.Tensor | None:
    """The processed logits of ``processors`` applied in order, or ``None`` if a kernel cannot run."""
    ran = _run(processors, input_ids, scores, program.WRITE)
    return None if ran is None else ran[0]


def sample_fused(
    processors: Sequence[Any], input_ids, scores: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor
) -> Draw | None:
    """Process, draw and measure in one pass, or ``None`` if a kernel cannot run."""
    ran = _run(processors, input_ids, scores, program.DRAW | program.TELEMETRY, seeds, steps)
    if ran is None:
        return None
    tel = ran[1].cpu().numpy()  # generate() reads every row's token and telemetry at each step anyway
    tokens = torch.from_numpy(np.maximum(tel[:, program.T_TOKEN], 0.0).astype(np.int64))
    empty = tel[:, program.T_STATUS] == program.STATUS_EMPTY
    telemetry = StepTelemetry(
        entropy_before=_float32(tel[:, program.T_H_BEFORE]),
        entropy_after=_float32(tel[:, program.T_H_AFTER]),
        kept=torch.from_numpy(tel[:, program.T_KEPT].astype(np.int64)),
        logprob_before=_float32(tel[:, program.T_LOGP_BEFORE]),
        logprob_after=_float32(np.where(empty, -np.inf, tel[:, program.T_LOGP_AFTER])),
        temperature=_float32(tel[:, program.T_TEMPERATURE]),
    )
    return Draw(tokens.to(scores.device), telemetry)


def _float32(column: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(column.astype(np.float32))


def greedy_draw(raw: torch.Tensor) -> Draw:
    """Greedy decoding as a draw: the point mass on the first argmax at temperature 0, so its telemetry
    reads like a sampler's."""
    tokens = greedy(raw)
    point_mass = torch.full_like(raw, -torch.inf, dtype=torch.float32).scatter_(1, tokens[:, None], 0.0)
    return Draw(tokens, measure_step(raw, point_mass, tokens, torch.zeros(raw.shape[0])))
