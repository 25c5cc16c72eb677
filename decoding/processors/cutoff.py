"""Absolute probability cut-offs: epsilon and eta sampling (Hewitt et al., "Truncation Sampling as
Language Model Desmoothing")."""

from __future__ import annotations

import torch

from ...kernels import program
from ..entropy import entropy_from_log_probs, log_probs
from ..rowparams import RowParam, check_row_param, row_column
from .base import Truncation


class EpsilonCutoff(Truncation):
    """Remove every token with ``p_i < epsilon`` (``epsilon=0`` keeps everything).

    Args:
        epsilon: in ``[0, 1)``, a scalar or a ``[batch]`` tensor; typical values 3e-4 to 9e-4.
        min_tokens_to_keep: keep at least this many of the highest tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import EpsilonCutoff
        >>> logits = torch.tensor([[0.5, 0.45, 0.04, 0.01]]).log()
        >>> EpsilonCutoff(0.02)(None, logits).isfinite()
        tensor([[ True,  True,  True, False]])
    """

    kernel_code = program.EPSILON
    kernel_param = "epsilon"

    def __init__(self, epsilon: RowParam, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.epsilon = check_row_param("epsilon", epsilon, 0.0, 1.0, hi_open=True)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        eps = row_column(self.epsilon, scores, "epsilon", scores.dtype)
        return scores.softmax(dim=-1) < eps


class EtaCutoff(Truncation):
    """Remove every token with ``p_i < min(epsilon, sqrt(epsilon) · exp(-H(p)))``: the cut-off shrinks on
    high-entropy rows (``epsilon=0`` keeps everything).

    Args:
        epsilon: in ``[0, 1)``, a scalar or a ``[batch]`` tensor; typical values 3e-4 to 2e-3.
        min_tokens_to_keep: keep at least this many of the highest tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import EtaCutoff
        >>> logits = torch.tensor([[0.9, 0.09, 0.009, 0.001]]).log()
        >>> EtaCutoff(0.01)(None, logits).isfinite()
        tensor([[ True,  True, False, False]])
    """

    kernel_code = program.ETA
    kernel_param = "epsilon"

    def __init__(self, epsilon: RowParam, min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.epsilon = check_row_param("epsilon", epsilon, 0.0, 1.0, hi_open=True)

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        eps = row_column(self.epsilon, scores, "epsilon", scores.dtype)
        logp = log_probs(scores)
        h = entropy_from_log_probs(logp).unsqueeze(-1)
        eta = torch.minimum(eps, eps.sqrt() * torch.exp(-h))
        return logp.exp() < eta
