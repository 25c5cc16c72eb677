"""The GRPO objective: group advantages, the clipped surrogate, the k3 KL and loss aggregation.

Every function is pure and works on per-token tensors shaped ``[rows, tokens]`` with a 0/1 ``mask``
of the tokens that count (completion tokens, as chosen by the entropy control).
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("token-mean", "sequence-mean")
ADVANTAGE_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``A = (r - mean_group) / (std_group + 1e-4)`` for rewards laid out group after group.

    ``std`` is the unbiased sample standard deviation (as in TRL's GRPO); a group whose rewards are all
    equal gets zero advantages.

    Example:
        >>> import torch
        >>> group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), group_size=2)
        tensor([ 0.7070, -0.7070,  0.0000,  0.0000])
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be a flat tensor of whole groups of {group_size}, got shape {tuple(rewards.shape)}")
    groups = rewards.double().view(-1, group_size)
    std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
    return ((groups - groups.mean(dim=1, keepdim=True)) / (std + ADVANTAGE_EPS)).view(-1).float()


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """Per-token ``-min(ratio·A, clamp(ratio, 1-eps_low, 1+eps_high)·A)``."""
    return -torch.minimum(ratio * advantages, ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * advantages)


def k3_kl(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ ‖ π_ref) per token: ``exp(ref - logp) - (ref - logp) - 1`` (>= 0)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def aggregate(loss: torch.Tensor, mask: torch.Tensor, how: str, normaliser: float | None = None,
              rows_normaliser: float | None = None) -> torch.Tensor:
    """Reduce per-token ``loss`` to a scalar.

    ``"token-mean"``: ``Σ loss·mask / Σ mask`` over the batch (DAPO). ``"sequence-mean"``: the mean over
    sequences of each sequence's token mean (GRPO); rows without a counted token count as zero.
    ``normaliser`` / ``rows_normaliser`` replace ``Σ mask`` / the row count when ``loss`` is one slice of a
    larger batch (gradient accumulation), so the slices' losses add up to the whole batch's."""
    mask = mask.to(loss.dtype)
    if how == "token-mean":
        total = float(mask.sum()) if normaliser is None else normaliser
        return (loss * mask).sum() / max(total, 1.0)
    if how == "sequence-mean":
        per_row = (loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        rows = loss.shape[0] if rows_normaliser is None else rows_normaliser
        return per_row.sum() / max(rows, 1)
    raise ValueError(f"`aggregation` must be one of {', '.join(AGGREGATIONS)}, got {how!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``values`` over ``mask`` (0.0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    count = float(mask.sum())
    return float((values * mask).sum()) / count if count else 0.0
