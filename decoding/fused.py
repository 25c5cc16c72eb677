"""Running processors through the fused kernels (entrodec.kernels) when every one of them has a kernel.

A processor opts in with ``kernel_op(input_ids, scores) -> KernelOp`` (its op code and per-row values,
scalars or ``[batch]`` tensors) and may take back what the kernel measured with
``after_kernel(input_ids, measured)`` (a :class:`Measured`: the temperature it applied and the entropy it
saw). ``process_fused`` and ``sample_fused`` return ``None`` whenever the kernels cannot run, and the
caller falls back to the torch reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import kernels
from ..kernels import program
from ..kernels.launch import run_cpu_step
from .draw import as_step_tensor, greedy
from .rowparams import check_rows
from .telemetry import StepTelemetry, measure_step


class KernelOp(NamedTuple):
    code: int
    values: dict[str, Any]  # per slot, in order: the parameter's name and a number or a [batch] tensor


class Measured:
    """What the kernel measured for one processor of the chain at one step, read from the step's
    telemetry when asked for: right after the model's forward pass each conversion to a tensor costs tens
    of microseconds, and most steps nobody asks (``generate()`` reads the step's own telemetry)."""

    __slots__ = ("_telemetry", "_index")

    def __init__(self, telemetry: np.ndarray | torch.Tensor, index: int) -> None:
        self._telemetry = telemetry
        self._index = index

    @property
    def temperature(self) -> torch.Tensor:
        """The temperature the processor applied, float32 ``[batch]``."""
        column = self._telemetry[:, program.op_temperature_column(self._index)]
        return torch.from_numpy(column.astype(np.float32)) if isinstance(column, np.ndarray) else column.float()

    @property
    def entropy(self) -> torch.Tensor:
        """The entropy of the distribution the processor saw, float64 ``[batch]`` (NaN where it has none)."""
        column = self._telemetry[:, program.op_entropy_column(self._index)]
        return torch.from_numpy(column.copy()) if isinstance(column, np.ndarray) else column.clone()


class Draw(NamedTuple):
    """One decoding step's tokens (``[batch]``, on the scores' device) and telemetry (on the CPU)."""

    tokens: torch.Tensor
    telemetry: StepTelemetry


def kernel_program(processors: Sequence[Any], input_ids, scores: torch.Tensor) -> tuple[list[int], torch.Tensor] | None:
    """The kernel program of ``processors`` for ``scores``: op codes and per-row parameters (float64
    ``[batch, n_ops, SLOTS]``), or ``None`` when the kernels cannot run them."""
    compiled = _compile(processors, input_ids, scores)
    return None if compiled is None else (compiled[0].tolist(), torch.from_numpy(compiled[1].copy()))


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


def _compile(processors: Sequence[Any], input_ids, scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """Op codes (int64) and parameters (float64 ``[batch, n_ops, SLOTS]``) in NumPy, never to be written:
    a program of plain numbers is built once and then looked up, since right after the model's forward
    pass every line of Python costs several times its warm price."""
    ops = _kernel_ops(processors, input_ids, scores)
    if ops is None:
        return None
    entries = tuple((op.code, tuple(op.values.items())) for op in ops)
    if all(type(value) in (int, float, bool) for _, items in entries for _, value in items):
        return _built(scores.shape[0], entries)
    return _build(scores.shape[0], entries)  # per-row tensors: built afresh


@lru_cache(maxsize=64)
def _built(batch: int, entries: tuple) -> tuple[np.ndarray, np.ndarray]:
    return _build(batch, entries)


def _build(batch: int, ops: Sequence[tuple[int, tuple[tuple[str, Any], ...]]]) -> tuple[np.ndarray, np.ndarray]:
    # filled in NumPy: a torch op per slot would cost more than the kernel pass itself at batch 1
    params = np.zeros((batch, len(ops), program.SLOTS))
    for index, (_, items) in enumerate(ops):
        for slot, (name, value) in enumerate(items):
            if isinstance(value, torch.Tensor):
                check_rows(value, batch, name)
                value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
            params[:, index, slot] = value
    return np.array([code for code, _ in ops], dtype=np.int64), params


def _after_kernel(processors: Sequence[Any], input_ids, tel: np.ndarray | torch.Tensor) -> None:
    """Hand each processor what the kernel measured for it (CPU telemetry arrives as NumPy; device
    telemetry stays on the device: only HAPO's windows read it back)."""
    for index, processor in enumerate(processors):
        after = getattr(processor, "after_kernel", None)
        if after is not None:
            after(input_ids, Measured(tel, index))


class ReportsTemperature:
    """``last_temperature``: the temperature each row got at the processor's last call (float32
    ``[batch]``, ``None`` before the first). After a fused kernel it is read from the kernel's
    telemetry when first asked for."""

    _last_temperature: torch.Tensor | None = None
    _measured: Measured | None = None

    @property
    def last_temperature(self) -> torch.Tensor | None:
        if self._measured is not None:
            self._last_temperature = self._measured.temperature
            self._measured = None
        return self._last_temperature

    @last_temperature.setter
    def last_temperature(self, value: torch.Tensor | None) -> None:
        self._last_temperature = value
        self._measured = None

    def after_kernel(self, input_ids: torch.LongTensor | None, measured: Measured) -> None:
        self._measured = measured


def process_fused(processors: Sequence[Any], input_ids, scores: torch.Tensor) -> torch.Tensor | None:
    """The processed logits of ``processors`` applied in order, or ``None`` if a kernel cannot run."""
    compiled = _compile(processors, input_ids, scores)
    if compiled is None:
        return None
    out, tel = kernels.run_program(scores, compiled[0], torch.from_numpy(compiled[1]), program.WRITE)
    _after_kernel(processors, input_ids, tel.numpy() if tel.is_cpu else tel)
    return out


def sample_fused(
    processors: Sequence[Any], input_ids, scores: torch.Tensor, seeds: torch.Tensor, steps: int | torch.Tensor
) -> Draw | None:
    """Process, draw and measure in one pass, or ``None`` if a kernel cannot run. ``seeds``: int64
    ``[batch]`` on the scores' device; ``steps``: one int for every row, or a tensor."""
    compiled = _compile(processors, input_ids, scores)
    if compiled is None:
        return None
    mode = program.DRAW | program.TELEMETRY
    on_cpu = scores.is_cpu
    if on_cpu:  # straight to the CPU backend's arrays: the fewest Python steps between forward and kernel
        tel = run_cpu_step(scores, compiled[0], compiled[1], mode, seeds.numpy(),
                           steps if isinstance(steps, int) else as_step_tensor(steps, scores.shape[0]).numpy())
        _after_kernel(processors, input_ids, tel)
    else:
        steps = as_step_tensor(steps, scores.shape[0], scores.device)
        _, on_device = kernels.run_program(scores, compiled[0], torch.from_numpy(compiled[1]), mode, seeds, steps)
        _after_kernel(processors, input_ids, on_device)
        tel = on_device.cpu().numpy()  # generate() reads every row's token and telemetry at each step anyway
    # one slice and cast per dtype (no fancy index: right after the forward pass every distinct NumPy
    # or torch routine costs tens of microseconds), each field then a contiguous row
    floats = tel[:, :program.FIXED].T.astype(np.float32, order="C")
    ints = tel[:, program.T_TOKEN:program.T_KEPT + 1:program.T_KEPT - program.T_TOKEN].T.astype(np.int64, order="C")
    tokens = torch.from_numpy(ints[0])
    telemetry = StepTelemetry(
        entropy_before=torch.from_numpy(floats[program.T_H_BEFORE]),
        entropy_after=torch.from_numpy(floats[program.T_H_AFTER]),
        kept=torch.from_numpy(ints[1]),
        logprob_before=torch.from_numpy(floats[program.T_LOGP_BEFORE]),
        logprob_after=torch.from_numpy(floats[program.T_LOGP_AFTER]),
        temperature=torch.from_numpy(floats[program.T_TEMPERATURE]),
    )
    return Draw(tokens if on_cpu else tokens.to(scores.device), telemetry)


def greedy_draw(raw: torch.Tensor) -> Draw:
    """Greedy decoding as a draw: the point mass on the first argmax at temperature 0, so its telemetry
    reads like a sampler's."""
    tokens = greedy(raw)
    point_mass = torch.full_like(raw, -torch.inf, dtype=torch.float32).scatter_(1, tokens[:, None], 0.0)
    return Draw(tokens, measure_step(raw, point_mass, tokens, torch.zeros(raw.shape[0])))
