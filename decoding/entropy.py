"""Entropy and log-probabilities of logit rows, safe on ``-inf`` entries and on half-precision input.

Natural logarithms throughout, with ``0 · ln 0 = 0``: a masked token contributes nothing instead of NaN.
"""

from __future__ import annotations

import torch


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` in float32 (float64 stays float64)."""
    work = logits if logits.dtype == torch.float64 else logits.float()
    return torch.log_softmax(work, dim=-1)


def entropy_from(probs: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """``-Σ p ln p`` per row from matching probabilities and log-probabilities."""
    # Clamping -inf to the lowest finite value makes 0 · ln 0 an exact 0 without a masking pass.
    return -torch.linalg.vecdot(probs, logp.clamp(min=torch.finfo(logp.dtype).min))


def entropy_from_log_probs(logp: torch.Tensor) -> torch.Tensor:
    """``-Σ p ln p`` per row from log-probabilities, treating ``-inf`` entries as zero mass."""
    return entropy_from(logp.exp(), logp)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` per row, shape ``[batch]``."""
    logp = log_probs(logits)
    return entropy_from(torch.softmax(logp, dim=-1), logp)
