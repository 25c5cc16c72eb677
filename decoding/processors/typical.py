"""Locally typical sampling: keep the tokens whose surprisal is closest to the entropy."""

from __future__ import annotations

import torch

from ..entropy import entropy_from_log_probs, log_probs
from ..rowparams import RowParam, check_row_param, row_column
from .base import Truncation


class Typical(Truncation):
    """Order tokens by ``|-ln p_i - H(p)|`` ascending and keep the shortest prefix whose mass reaches
    ``typical_p`` (Meister et al., "Locally Typical Sampling"; transformers' semantics).

    ``typical_p=1`` keeps everything.

    Args:
        typical_p: in ``(0, 1]``, a scalar or a ``[batch]`` tensor.
        min_tokens_to_keep: keep at least this many tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import Typical
        >>> logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
        >>> Typical(0.5)(None, logits).isfinite()  # H = 1.28 nats; -ln p = 0.92, 1.20, 1.61, 2.30
        tensor([[False,  True,  True, False]])
    """

    keeps_own_minimum = True  # the most typical tokens, not the most likely ones

    def __init__(self, typical_p: RowParam, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.typical_p = check_row_param("typical_p", typical_p, 0.0, 1.0, lo_open=True)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        mass = row_column(self.typical_p, scores, "typical_p", scores.dtype)
        logp = log_probs(scores)
        h = entropy_from_log_probs(logp).unsqueeze(-1)
        surprise_gap = (-logp - h).abs()
        sorted_gap, order = torch.sort(surprise_gap, dim=-1)
        cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < mass).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
        sorted_remove = sorted_gap > sorted_gap.gather(-1, last)
        sorted_remove[..., : self.min_tokens_to_keep] = False
        sorted_remove &= mass < 1
        return sorted_remove.scatter(1, order, sorted_remove)
