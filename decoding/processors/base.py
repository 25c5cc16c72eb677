"""What every entrodec processor shares: the transformers ``LogitsProcessor`` interface and, for
truncations, the rule that at least ``min_tokens_to_keep`` of the highest tokens survive."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ..fused import KernelOp, process_fused
from ..rowparams import check_min_tokens_to_keep


def protect_top(scores: torch.Tensor, remove: torch.Tensor, min_tokens_to_keep: int) -> torch.Tensor:
    """Clear ``remove`` for the ``min_tokens_to_keep`` highest scores of each row (ties with the last
    of them are kept too, as transformers' epsilon and eta warpers do)."""
    k = min(min_tokens_to_keep, scores.shape[-1])
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]
    return remove & (scores < kth)


class Truncation(LogitsProcessor):
    """A processor that only removes tokens (sets their logits to ``-inf``) and never rescales the rest.

    Subclasses implement :meth:`removal_mask` on float32 scores (the torch reference); the base class
    keeps the top ``min_tokens_to_keep`` tokens and writes ``-inf`` in the input's own dtype (fp16/bf16
    included). A subclass with a fused kernel names its op code in ``kernel_code`` and the attribute
    holding its parameter in ``kernel_param``; calls then run the kernel when one can run.
    """

    keeps_own_minimum = False
    kernel_code: int | None = None
    kernel_param = ""

    def __init__(self, min_tokens_to_keep: int = 1) -> None:
        self.min_tokens_to_keep = check_min_tokens_to_keep(min_tokens_to_keep)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def keep_at_least(self, scores: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
        """Apply ``min_tokens_to_keep`` to the highest scores. Rules that walk their own order (top-p,
        typical, Top-H) keep the first ``min_tokens_to_keep`` of that order inside ``removal_mask`` and
        set ``keeps_own_minimum``."""
        if self.keeps_own_minimum:
            return remove
        return protect_top(scores, remove, self.min_tokens_to_keep)

    def kernel_op(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> KernelOp | None:
        if self.kernel_code is None:
            return None
        values = {self.kernel_param: getattr(self, self.kernel_param), "min_tokens_to_keep": self.min_tokens_to_keep}
        return KernelOp(self.kernel_code, values)

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        fused = process_fused([self], input_ids, scores)
        if fused is not None:
            return fused
        work = scores if scores.dtype == torch.float64 else scores.float()
        remove = self.keep_at_least(work, self.removal_mask(work))
        return scores.masked_fill(remove, -torch.inf)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"
