"""Entropic Annealing (ePF): how much to flatten the resampling distribution before a step's resampling.

Over-confident early rewards make particle filtering copy one particle N times (particle
impoverishment). When the weights have collapsed early in the search, ePF resamples from
``softmax(w / T)`` with ``T > 1``; the final choice still uses the untempered weights. ``T`` never goes
below 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCHEDULES = ("ess", "entropy", "none")


def normalised(log_weights: Sequence[float] | torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(log_weights / temperature)`` in float64."""
    w = torch.as_tensor(log_weights, dtype=torch.float64)
    return torch.softmax(w / temperature, dim=0)


def effective_sample_size(probabilities: torch.Tensor) -> float:
    """``1 / Σ p²`` of normalised weights: N when uniform, 1 when one particle holds all the mass."""
    return float(1.0 / (probabilities**2).sum())


def ess_temperature(ess_ratio: float, progress: float, ess_threshold: float = 0.5, progress_threshold: float = 0.5) -> float:
    """The ``ess`` schedule: ``max(1, (1/ess_ratio)·(1 − progress))`` while ``ess_ratio < ess_threshold``
    and ``progress < progress_threshold``, else 1.

    >>> ess_temperature(0.2, 0.2), ess_temperature(0.5, 0.8)
    (4.0, 1.0)
    """
    if ess_ratio < ess_threshold and progress < progress_threshold:
        return max(1.0, (1.0 / ess_ratio) * (1.0 - progress))
    return 1.0


def entropy_temperature(normalised_entropy: float, progress: float) -> float:
    """The ``entropy`` schedule: ``β = Hn + (1 − Hn)·progress``, ``T = max(1, 1/β)``, where ``Hn`` is the
    weights' entropy divided by ``ln N`` (1 when uniform).

    >>> round(entropy_temperature(0.5, 0.3), 3)
    1.538
    """
    beta = normalised_entropy + (1.0 - normalised_entropy) * progress
    return 1.0 if beta <= 0 else max(1.0, 1.0 / beta)


@dataclass(frozen=True)
class Annealing:
    """Which schedule tempers resampling, and its thresholds (the ``ess`` schedule acts only while the
    ESS ratio is below ``ess_threshold`` and the search's progress below ``progress_threshold``; the
    ``entropy`` schedule always applies and reaches 1 by itself as progress reaches 1)."""

    schedule: str = "ess"
    ess_threshold: float = 0.5
    progress_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`annealing` must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("ess_threshold", "progress_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
                raise ValueError(f"`{name}` must be in (0, 1], got {value!r}")

    def temperature(self, probabilities: torch.Tensor, progress: float) -> float:
        """The resampling temperature for weights whose (untempered) normalised form is ``probabilities``,
        at ``progress`` (completed steps / max steps)."""
        n = probabilities.numel()
        if self.schedule == "none" or n < 2:
            return 1.0
        if self.schedule == "ess":
            return ess_temperature(effective_sample_size(probabilities) / n, progress, self.ess_threshold, self.progress_threshold)
        p = probabilities[probabilities > 0]
        return entropy_temperature(float(-(p * p.log()).sum()) / math.log(n), progress)
