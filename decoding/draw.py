"""Drawing a token from processed logits, reproducibly per row.

Each row owns a ``torch.Generator`` seeded from its request's seed and draws one uniform number per
step, so a row's tokens depend only on its own seed and step, never on which other rows share the
batch. The token is found by inverting the row's cumulative distribution (accumulated in float64, so
rounding cannot shift mass between tokens); tokens of zero probability can never be drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def row_generators(seeds: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One independent generator per row, seeded with that row's seed."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def row_uniforms(generators: Sequence[torch.Generator], device: torch.device | str) -> torch.Tensor:
    """One uniform number in [0, 1) per row, each from the row's own generator, shape ``[batch, 1]``."""
    draws = [torch.rand(1, generator=g, device=g.device, dtype=torch.float64) for g in generators]
    return torch.cat(draws).view(-1, 1).to(device)


def inverse_cdf(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Sample one token per row from (unnormalised) ``probs``; zero-probability tokens are never drawn."""
    if len(generators) != probs.shape[0]:
        raise ValueError(f"need one generator per row: {len(generators)} generators for {probs.shape[0]} rows")
    cumulative = probs.double().cumsum(dim=-1)
    target = row_uniforms(generators, probs.device) * cumulative[:, -1:]
    # the first index whose cumulative mass exceeds the target; a zero-mass token never starts a step up
    return torch.searchsorted(cumulative, target, right=True).clamp(max=probs.shape[-1] - 1).view(-1)


def sample_logits(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Sample one token per row from ``softmax(logits)``; ``-inf`` entries are never drawn."""
    return inverse_cdf(torch.softmax(logits.float(), dim=-1), generators)


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The first most likely token of each row."""
    return logits.argmax(dim=-1)
