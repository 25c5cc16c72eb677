"""Top-nσ: keep the logits within ``n`` standard deviations of the maximum."""

from __future__ import annotations

import math

import torch

from ...kernels import program
from ..rowparams import RowParam, check_row_param, row_column
from .base import Truncation


class TopNSigma(Truncation):
    """Keep token ``i`` iff ``z_i >= z_max - n·σ``, where σ is the (population) standard deviation of the
    row's finite logits (Tang et al., "Top-nσ: Not All Logits Are You Need"). ``-inf`` entries are left
    out of σ. Invariant to temperature: scaling the logits scales σ and the gap alike.

    Args:
        n: ``>= 0`` (``inf`` keeps everything), a scalar or a ``[batch]`` tensor; the paper uses 1.0.
        min_tokens_to_keep: keep at least this many of the highest tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import TopNSigma
        >>> TopNSigma(1.0)(None, torch.tensor([[10.0, 9.0, 1.0, 0.0, -float("inf")]])).isfinite()
        tensor([[ True,  True, False, False, False]])
    """

    kernel_code = program.TOP_N_SIGMA
    kernel_param = "n"

    def __init__(self, n: RowParam = 1.0, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.n = check_row_param("n", n, 0.0)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        n = row_column(self.n, scores, "n", torch.float64)
        work = scores.double()
        finite = work.isfinite()
        count = finite.sum(dim=-1, keepdim=True).clamp(min=1)
        zeroed = torch.where(finite, work, torch.zeros_like(work))
        mean = zeroed.sum(dim=-1, keepdim=True) / count
        var = torch.where(finite, (work - mean) ** 2, torch.zeros_like(work)).sum(dim=-1, keepdim=True) / count
        threshold = work.amax(dim=-1, keepdim=True) - n * var.sqrt()
        threshold = torch.where(torch.isinf(n), torch.full_like(threshold, -math.inf), threshold)
        return work < threshold
