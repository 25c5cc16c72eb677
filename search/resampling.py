"""Resampling: which particles survive a step, and how many copies each gets."""

from __future__ import annotations

import torch

METHODS = ("systematic", "multinomial")


def systematic(probabilities: torch.Tensor, n: int, generator: torch.Generator) -> list[int]:
    """``n`` indices by systematic resampling: one uniform offset, then ``n`` evenly spaced points on the
    cumulative weights. Particle ``i`` gets ``⌊n·p_i⌋`` or ``⌈n·p_i⌉`` copies (lower variance than
    multinomial). Indices come out sorted, so copies of a particle are adjacent."""
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    points = (offset + torch.arange(n, dtype=torch.float64)) / n
    edges = torch.cumsum(probabilities.to(torch.float64), dim=0)
    edges[-1] = 1.0  # rounding must not leave the last point beyond the last edge
    return torch.searchsorted(edges, points, right=True).clamp_(max=len(edges) - 1).tolist()


def multinomial(probabilities: torch.Tensor, n: int, generator: torch.Generator) -> list[int]:
    """``n`` independent draws from ``probabilities`` (with replacement), sorted."""
    drawn = torch.multinomial(probabilities.to(torch.float64), n, replacement=True, generator=generator)
    return sorted(drawn.tolist())


def resample(method: str, probabilities: torch.Tensor, n: int, generator: torch.Generator) -> list[int]:
    return (systematic if method == "systematic" else multinomial)(probabilities, n, generator)
