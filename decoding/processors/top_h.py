"""Top-H: entropy-constrained truncation (Potraghloo et al., "Top-H Decoding", NeurIPS 2025,
arXiv 2509.02510)."""

from __future__ import annotations

import torch

from ...kernels import program
from ..entropy import entropy_from_log_probs, log_probs
from ..fused import KernelOp
from ..rowparams import RowParam, check_row_param, row_column
from .base import Truncation

RULES = ("paper", "hf")
HF_TOP_N = 100  # the candidate cap of the authors' released code and transformers' TopHLogitsWarper


def paper_rule_keep(scores: torch.Tensor, alpha: torch.Tensor, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Kept mask of the paper's Algorithm 1 for ``[batch, vocab]`` scores and a ``[batch, 1]`` alpha.

    Walk tokens by probability (descending, ties by lower id); keep the longest prefix whose
    renormalised entropy ``H(q_k) = ln Γ_k − h_k/Γ_k`` stays ``<= alpha·H(p)``. Sums run in float64.
    The order is taken from the logits, which is the probabilities' exact order even where a
    probability underflows to zero (those tokens are never admitted beyond ``min_tokens_to_keep``).
    """
    logp = log_probs(scores.double())
    p = logp.exp()
    bound = alpha.double() * entropy_from_log_probs(logp).unsqueeze(-1)
    order = torch.sort(scores.double(), dim=-1, descending=True, stable=True).indices
    sorted_p = p.gather(-1, order)
    sorted_logp = logp.gather(-1, order)
    gamma = sorted_p.cumsum(dim=-1)
    plogp = torch.where(sorted_p > 0, sorted_p * sorted_logp, torch.zeros_like(sorted_p)).cumsum(dim=-1)
    prefix_entropy = gamma.log() - plogp / gamma
    # alpha = 1 admits the whole support in exact arithmetic; rounding must not take a token away.
    within = ((prefix_entropy <= bound) | (alpha >= 1)) & (sorted_p > 0)
    within[:, :min_tokens_to_keep] = True
    sorted_keep = within.cumprod(dim=-1).bool()
    return torch.zeros_like(sorted_keep).scatter(1, order, sorted_keep)


def top_n_lowest_ids_first(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` highest scores of each row and their ids, ordered by score descending and, among ties,
    by lower id (``torch.topk`` documents no order for ties)."""
    kth = torch.topk(scores, n, dim=-1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    take = above | (tied & (tied.long().cumsum(dim=-1) <= n - above.sum(dim=-1, keepdim=True)))
    ids = take.nonzero()[:, 1].view(scores.shape[0], n)
    values = scores.gather(1, ids)
    order = torch.sort(values, dim=-1, descending=True, stable=True).indices
    return values.gather(1, order), ids.gather(1, order)


def hf_rule_keep(scores: torch.Tensor, alpha: torch.Tensor, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Kept mask of the authors' released rule (transformers' ``TopHLogitsWarper``): over the top 100
    logits renormalised to q, keep the longest prefix with ``Σ −q ln q <= alpha · H(q)``. Ties at the
    100th logit are broken by lower id."""
    top_logits, top_idx = top_n_lowest_ids_first(scores, min(HF_TOP_N, scores.shape[-1]))
    # Normalise exactly as the reference does (subtract logsumexp, then softmax; entropy from the
    # normalised logits, per-token terms from log q) so that kept sets agree bit for bit.
    normalised = top_logits - top_logits.logsumexp(dim=-1, keepdim=True)
    q = normalised.softmax(dim=-1)
    total = -torch.where(q > 0, normalised * q, torch.zeros_like(q)).sum(dim=-1, keepdim=True)
    terms = torch.where(q > 0, -q * q.log(), torch.zeros_like(q))
    tau = alpha.to(scores.dtype) * total
    selected = (terms.cumsum(dim=-1) <= tau) & (q > 0)
    selected[:, :min_tokens_to_keep] = True
    return torch.zeros_like(scores, dtype=torch.bool).scatter(1, top_idx, selected)


class TopH(Truncation):
    """Keep the most probable tokens whose renormalised distribution has entropy at most ``alpha`` times
    the entropy of the full distribution (Top-H). Confident rows keep one or two tokens; flat rows keep
    many, so the sampler stays coherent at high temperature without starving creative steps.

    Two rules:

    - ``rule="paper"`` (default): the paper's Algorithm 1 over the whole vocabulary. Tokens are walked
      by probability (ties by lower token id) and the longest prefix with ``H(q_k) <= alpha·H(p)`` is
      kept, ``H(q_k) = ln Γ_k − h_k/Γ_k`` with ``Γ_k`` the prefix mass and ``h_k = Σ p ln p``.
      ``alpha=1`` keeps the whole support.
    - ``rule="hf"``: what the authors' released code and ``transformers.TopHLogitsWarper`` compute: the
      top 100 tokens, renormalised to q; keep the longest prefix with cumulative ``−q ln q`` at most
      ``alpha`` times their entropy. It keeps far fewer tokens on flat rows.

    Args:
        alpha: in ``(0, 1]``, a scalar or a ``[batch]`` tensor; the paper's default is 0.4.
        rule: ``"paper"`` or ``"hf"``.
        min_tokens_to_keep: keep at least this many of the highest tokens.

    Example:
        >>> import torch
        >>> from entrodec.decoding import TopH
        >>> logits = torch.tensor([[0.5, 0.25, 0.15, 0.1]]).log()
        >>> TopH(alpha=0.4)(None, logits).isfinite()
        tensor([[ True, False, False, False]])
        >>> TopH(alpha=0.8)(None, logits).isfinite()
        tensor([[ True,  True, False, False]])
    """

    keeps_own_minimum = True  # first tokens of its order, ties by lower id: the exact kept set

    def __init__(self, alpha: RowParam = 0.4, rule: str = "paper", min_tokens_to_keep: int = 1) -> None:
        super().__init__(min_tokens_to_keep)
        self.alpha = check_row_param("alpha", alpha, 0.0, 1.0, lo_open=True)
        if rule not in RULES:
            raise ValueError(f"`rule` must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
        self.rule = rule

    def kernel_op(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> KernelOp:
        code = program.TOP_H if self.rule == "paper" else program.TOP_H_HF
        return KernelOp(code, {"alpha": self.alpha, "min_tokens_to_keep": self.min_tokens_to_keep})

    def removal_mask(self, scores: torch.Tensor) -> torch.Tensor:
        alpha = row_column(self.alpha, scores, "alpha", torch.float64)
        rule = paper_rule_keep if self.rule == "paper" else hf_rule_keep
        return ~rule(scores, alpha, self.min_tokens_to_keep)

