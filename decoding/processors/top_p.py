"""Top-p (nucleus): keep the smallest set of highest tokens whose mass reaches ``p``."""

from __future__ import annotations

import torch

from ...kernels import program
from ..rowparams import RowParam, check_row_param, row_column
from .base import Truncation


class TopP(Truncation):
    """Keep the highest tokens whose cumulative probability reaches ``top_p`` (transformers' semantics:
    sort ascending and remove the tail whose cumulative mass is ``<= 1 - top_p``). Among tokens tied at
    the boundary the lower ids are kept (transformers leaves that to ``torch.sort``'s unstable order).

    ``top_p=1`` keeps every token of non-zero probability.

    Args:
        top_p: in ``[0, 1]``, a scalar or a ``[batch]`` tensor.
        min_tokens_to_keep: keep at least this many of the highest tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import TopP
        >>> logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
        >>> TopP(0.8)(None, logits).isfinite()
        tensor([[ True,  True, False, False]])
    """

    kernel_code = program.TOP_P
    kernel_param = "top_p"

    keeps_own_minimum = True

    def __init__(self, top_p: RowParam, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.top_p = check_row_param("top_p", top_p, 0.0, 1.0)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        p = row_column(self.top_p, scores, "top_p", torch.float64)
        # ascending, ties by *higher* id first, so that the lower ids of a tie are the last removed
        sorted_logits, order = torch.sort(scores.flip(-1), dim=-1, descending=False, stable=True)
        order = scores.shape[-1] - 1 - order
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # 1 - p in double, then rounded once to the scores' dtype, as transformers' scalar compare does.
        sorted_remove = cumulative <= (1 - p).to(scores.dtype)
        sorted_remove[..., -self.min_tokens_to_keep:] = False
        return sorted_remove.scatter(1, order, sorted_remove)
