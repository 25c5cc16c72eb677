"""Drawing a token from processed logits, reproducibly per row: the exponential race.

Token ``i`` of a row gets a uniform number ``u_i`` from a counter-based generator keyed by the row's
seed and decoding step (see :mod:`entrodec.kernels.rng`), and the row draws
``argmax_i (logit_i − ln(−ln u_i))``, which follows ``softmax(logits)`` exactly. A row's token depends
only on its own seed, step and logits — never on which other rows share the batch, nor on whether the
torch code below or a fused kernel computed it (both evaluate the same numbers; they can differ only
when two candidates' scores tie to within rounding). ``-inf`` entries are never drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..kernels.rng import GOLDEN, LOW_BITS, MIX32_MULS, MIX32_SHIFTS, MUL1, MUL2, SALT, SHIFTS, WEYL_HIGH, WEYL_LOW

Seeds = int | Sequence[int] | torch.Tensor


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MUL1, _MUL2, _SALT = (_signed(v) for v in (GOLDEN, MUL1, MUL2, SALT))


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    first, second, third = SHIFTS
    x = (x ^ _shift_right(x, first)) * _MUL1  # int64 products wrap like uint64 ones
    x = (x ^ _shift_right(x, second)) * _MUL2
    return x ^ _shift_right(x, third)


_WORD = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on 32-bit words held in int64 (non-negative, so ``>>`` is logical)."""
    first, second, third = MIX32_SHIFTS
    x = ((x ^ (x >> first)) * MIX32_MULS[0]) & _WORD  # the low 32 bits of a wrapped product are exact
    x = ((x ^ (x >> second)) * MIX32_MULS[1]) & _WORD
    return x ^ (x >> third)


def as_seed_tensor(seeds: Seeds, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[batch]`` int64 seeds (one int for every row, one per row, or a tensor); any Python int is taken
    modulo 2**64."""
    if isinstance(seeds, torch.Tensor):
        values = seeds
        if seeds.dtype != torch.int64 or seeds.dim() != 1 or not on_device(seeds, device):
            values = seeds.to(device=device, dtype=torch.int64).reshape(-1)
        if values.shape[0] == 1 and batch != 1:
            values = values.expand(batch)
    elif isinstance(seeds, int):
        values = torch.full((batch,), _signed(seeds), dtype=torch.int64, device=device)
    else:
        values = torch.tensor([_signed(int(s)) for s in seeds], dtype=torch.int64, device=device)
    if values.shape[0] != batch:
        raise ValueError(f"need one seed per row: {values.shape[0]} seeds for {batch} rows")
    return values


def on_device(tensor: torch.Tensor, device: torch.device | str) -> bool:
    """Whether ``tensor`` lives on ``device``. The CPU named as ``"cpu"`` is told by ``is_cpu``: Tensor.device
    builds a Python object, which right after a forward pass costs ~20 µs."""
    if isinstance(device, str) and device == "cpu":
        return tensor.is_cpu
    return tensor.device == (device if isinstance(device, torch.device) else torch.device(device))


def as_step_tensor(steps: int | torch.Tensor, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[batch]`` int64 decoding steps from one int or tensor for every row, or one per row."""
    if isinstance(steps, int):
        return torch.full((batch,), steps, dtype=torch.int64, device=device)
    return torch.as_tensor(steps, dtype=torch.int64, device=device).expand(batch)


def step_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The generator key of each row at its step (int64 bit patterns)."""
    return _mix(_mix(seeds ^ _SALT) + steps * _GOLDEN)


def token_uniforms(keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in (0, 1] (float64) for ``tokens`` under matching ``keys``."""
    counters = tokens + 1
    high = _mix32(((keys & _WORD) + counters * WEYL_HIGH) & _WORD)
    low = _mix32((_shift_right(keys, 32) + counters * WEYL_LOW) & _WORD) >> (32 - LOW_BITS)
    return ((high << LOW_BITS) + low + 1).double() * 2.0**-53


def race_draw(logits: torch.Tensor, seeds: Seeds, steps: int | torch.Tensor = 0) -> torch.Tensor:
    """One token per row of ``logits`` (``[batch, vocab]``), drawn from ``softmax(logits)`` by the
    exponential race keyed by each row's seed and step."""
    batch = logits.shape[0]
    seeds = as_seed_tensor(seeds, batch, logits.device)
    steps = as_step_tensor(steps, batch, logits.device)
    rows, cols = torch.nonzero(torch.isfinite(logits), as_tuple=True)
    u = token_uniforms(step_keys(seeds, steps)[rows], cols)
    scores = torch.full(logits.shape, -torch.inf, dtype=torch.float64, device=logits.device)
    # u = 1 gives -ln(-ln u) = +inf: that token wins, as in the kernels
    scores[rows, cols] = logits[rows, cols].double() - torch.log(-torch.log(u))
    return scores.argmax(dim=-1)  # the first maximum: ties go to the lower id, as in the kernels


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The first most likely token of each row."""
    return logits.argmax(dim=-1)
