"""Per-token telemetry, computed once per step for every consumer (generate, search, switching,
training, the server): entropy before and after the chain, kept-set size, and the sampled token's
log-probability under the model's own distribution and under the processed one."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .entropy import entropy_from, log_probs


@dataclass(frozen=True)
class StepTelemetry:
    """One decoding step, each field a ``[batch]`` tensor on the CPU."""

    entropy_before: torch.Tensor
    entropy_after: torch.Tensor
    kept: torch.Tensor
    logprob_before: torch.Tensor
    logprob_after: torch.Tensor
    temperature: torch.Tensor


def measure_step(raw: torch.Tensor, processed: torch.Tensor, tokens: torch.Tensor, temperature: torch.Tensor) -> StepTelemetry:
    """Telemetry for ``tokens`` drawn from ``softmax(processed)`` when the model produced ``raw`` logits
    (the torch reference of what the fused kernels report)."""
    index = tokens.view(-1, 1)
    before = log_probs(raw)
    after = log_probs(processed)
    kept = (after > -torch.inf).sum(dim=-1)
    # a row that kept nothing has no distribution to draw from: its token's log-probability is -inf
    logprob_after = after.gather(1, index).squeeze(1).masked_fill(kept == 0, -torch.inf)
    return StepTelemetry(
        entropy_before=entropy_from(torch.softmax(before, dim=-1), before).cpu(),
        entropy_after=entropy_from(after.exp(), after).cpu(),
        kept=kept.cpu(),
        logprob_before=before.gather(1, index).squeeze(1).cpu(),
        logprob_after=logprob_after.cpu(),
        temperature=temperature.cpu(),
    )
