"""min-p: keep tokens at least ``min_p`` times as likely as the most likely one."""

from __future__ import annotations

import math

import torch

from ...kernels import program
from ..rowparams import RowParam, check_row_param, row_column
from .base import Truncation


class MinP(Truncation):
    """Keep token ``i`` iff ``p_i >= min_p · max_j p_j``, computed in logit space as
    ``z_i >= z_max + ln(min_p)`` (no softmax needed; ``min_p=0`` keeps everything).

    Args:
        min_p: in ``[0, 1]``, a scalar or a ``[batch]`` tensor.
        min_tokens_to_keep: keep at least this many of the highest tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import MinP
        >>> logits = torch.tensor([[0.6, 0.3, 0.07, 0.03]]).log()
        >>> MinP(0.1)(None, logits).isfinite()
        tensor([[ True,  True,  True, False]])
    """

    kernel_code = program.MIN_P
    kernel_param = "min_p"

    def __init__(self, min_p: RowParam, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.min_p = check_row_param("min_p", min_p, 0.0, 1.0)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        min_p = row_column(self.min_p, scores, "min_p", torch.float64)
        log_min_p = torch.where(min_p > 0, min_p.clamp(min=math.ulp(0.0)).log(), -math.inf)
        threshold = scores.amax(dim=-1, keepdim=True).double() + log_min_p
        return scores.double() < threshold
