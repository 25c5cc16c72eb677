"""Top-k: keep the ``k`` highest logits."""

from __future__ import annotations

import torch

from ...kernels import program
from ..rowparams import RowParam, check_row_param, row_column
from .base import Truncation


class TopK(Truncation):
    """Keep the ``top_k`` highest-scoring tokens (all tokens tied with the ``top_k``-th are kept too).

    ``top_k=0`` disables the filter for that row (the llama.cpp and vLLM convention).

    Args:
        top_k: integer ``>= 0``, a scalar or a ``[batch]`` tensor.
        min_tokens_to_keep: keep at least this many of the highest tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import TopK
        >>> TopK(2)(None, torch.tensor([[1.0, 4.0, 3.0, 2.0]]))
        tensor([[-inf, 4., 3., -inf]])
    """

    kernel_code = program.TOP_K
    kernel_param = "top_k"

    def __init__(self, top_k: RowParam, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.top_k = check_row_param("top_k", top_k, 0, integer=True)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        k = row_column(self.top_k, scores, "top_k", torch.int64)
        off = k == 0
        k = k.clamp(min=self.min_tokens_to_keep, max=vocab)
        kmax = int(k.max())
        kth = torch.topk(scores, kmax, dim=-1).values.gather(1, k - 1)
        return (scores < kth) & ~off
