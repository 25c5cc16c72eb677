"""Per-row sampler parameters: a Python scalar for every row, or a ``[batch]`` tensor with one value per row.

Validation happens once, when a processor is built, so that a bad value is reported with the argument's
name and allowed range instead of surfacing later as a shape or NaN error deep inside torch.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Union

import torch

RowParam = Union[float, int, torch.Tensor]


def _describe(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_row_param(
    name: str,
    value: RowParam,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> RowParam:
    """Return ``value`` unchanged after checking that every entry lies in the given range.

    Raises ``TypeError`` for something that is neither a real number nor a 1-D tensor, and
    ``ValueError`` naming ``name`` and the allowed range for any entry outside it (NaN included).
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 1:
            raise ValueError(f"`{name}` as a tensor must be 1-D with one value per row, got shape {tuple(value.shape)}")
        if value.numel() == 0:
            raise ValueError(f"`{name}` as a tensor must have at least one entry")
        if integer and value.is_floating_point():
            raise TypeError(f"`{name}` must be an integer tensor, got dtype {value.dtype}")
        entries = value.detach().double().cpu()
    elif isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"`{name}` must be a number or a 1-D tensor, got {type(value).__name__}")
    else:
        if integer and not float(value).is_integer():
            raise TypeError(f"`{name}` must be an integer, got {value!r}")
        entries = torch.tensor([float(value)], dtype=torch.float64)
    below = entries <= lo if lo_open else entries < lo
    above = entries >= hi if hi_open else entries > hi
    bad = below | above | torch.isnan(entries)
    if bool(bad.any()):
        first = entries[bad][0].item()
        shown = int(first) if integer and math.isfinite(first) else first
        raise ValueError(f"`{name}` must be in {_describe(lo, hi, lo_open, hi_open)}, got {shown}")
    return value


def check_rows(value: torch.Tensor, batch: int, name: str) -> None:
    """Raise ``ValueError`` unless the per-row tensor ``value`` has one entry per row of a ``batch``."""
    if value.shape[0] != batch:
        raise ValueError(f"`{name}` has {value.shape[0]} values but the scores have {batch} rows")


def row_column(value: RowParam, scores: torch.Tensor, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` as a ``[batch, 1]`` column on ``scores``' device, ready to broadcast against ``scores``."""
    batch = scores.shape[0]
    dtype = dtype or torch.float32
    if isinstance(value, torch.Tensor):
        check_rows(value, batch, name)
        return value.to(device=scores.device, dtype=dtype).view(batch, 1)
    return torch.full((batch, 1), value, device=scores.device, dtype=dtype)


def check_min_tokens_to_keep(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`min_tokens_to_keep` must be an integer >= 1, got {value!r}")
    return value
