"""Entropy control: one interface, one small class per published method.

Each control turns a mini-batch's per-token statistics (pre-update log-probs, advantages, entropies)
into a :class:`TokenPlan` — which tokens count, which pass no gradient, per-token weights, which carry
KL-Cov's penalty — and :func:`policy_loss` turns a plan and the current log-probs into per-token losses.
Two controls act elsewhere: the adaptive entropy bonus adds ``-c·H`` to the loss (``bonus``), and target
entropy (AEPO) draws an auxiliary rollout at a temperature it picks (``rollout_temperature``).

Selections use the pre-update policy over the whole mini-batch, so gradient accumulation never
changes which tokens are picked; on a mini-batch's first update the pre-update and current policies
are the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..decoding.checks import in_range
from .objective import clipped_surrogate


@dataclass
class TokenStats:
    """Per-token facts of a mini-batch, ``[rows, tokens]``, all without gradient.

    ``old_logp``: log π_old(a) of the sampled token; ``advantages``: its row's advantage; ``mask``: the
    completion tokens; ``entropy``: H(π_old) at the token's position (nats); ``reinforce``: tokens of
    AEPO's auxiliary rows (a plain REINFORCE term, no ratio)."""

    old_logp: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor
    reinforce: torch.Tensor

    def rows(self, index: slice) -> "TokenStats":
        return TokenStats(*(getattr(self, f)[index] for f in ("old_logp", "advantages", "mask", "entropy", "reinforce")))


@dataclass
class TokenPlan:
    """What the loss does with each token. ``loss_mask``: tokens that count (and the normaliser);
    ``detach``: tokens whose loss passes no gradient; ``weight``: per-token multiplier; ``penalised``:
    tokens carrying ``penalty_coef·|logp - old_logp|``; ``clip``: PPO clipping on (KL-Cov turns it off)."""

    loss_mask: torch.Tensor
    detach: torch.Tensor
    weight: torch.Tensor
    penalised: torch.Tensor
    penalty_coef: float = 0.0
    clip: bool = True

    @classmethod
    def default(cls, stats: TokenStats) -> "TokenPlan":
        none = torch.zeros_like(stats.mask, dtype=torch.bool)
        return cls(stats.mask.bool(), none, torch.ones_like(stats.old_logp), none.clone())

    def rows(self, index: slice) -> "TokenPlan":
        return replace(self, loss_mask=self.loss_mask[index], detach=self.detach[index],
                       weight=self.weight[index], penalised=self.penalised[index])

    def picked(self) -> int:
        """How many tokens the control singled out (detached, penalised, or dropped from the loss)."""
        return int(self.detach.sum() + self.penalised.sum())


def policy_loss(logp: torch.Tensor, stats: TokenStats, plan: TokenPlan, eps_low: float, eps_high: float) -> torch.Tensor:
    """Per-token policy-gradient loss of ``plan`` given the current log-probs ``logp`` (with gradient).

    Ordinary tokens: the clipped surrogate (or ``-A·ratio`` without clipping), plus KL-Cov's penalty
    where planned, times the plan's weight; AEPO's auxiliary tokens: ``-A·logp``."""
    ratio = torch.exp(logp - stats.old_logp)
    advantages = stats.advantages
    if plan.clip:
        loss = clipped_surrogate(ratio, advantages, eps_low, eps_high)
    else:
        loss = -advantages * ratio
    if plan.penalty_coef:
        loss = loss + plan.penalty_coef * plan.penalised * (logp - stats.old_logp).abs()
    loss = torch.where(plan.detach, loss.detach(), loss)
    loss = torch.where(stats.reinforce, -advantages * logp, loss)
    return loss * plan.weight


def covariance(stats: TokenStats) -> torch.Tensor:
    """``(A_t - mean A)·(logp_t - mean logp)`` per token, means over the mini-batch's valid tokens
    (zero on invalid ones); Cui et al.'s driver of entropy change."""
    valid = stats.mask.bool() & ~stats.reinforce
    count = max(int(valid.sum()), 1)
    mean_a = stats.advantages[valid].sum() / count
    mean_logp = stats.old_logp[valid].sum() / count
    cov = (stats.advantages - mean_a) * (stats.old_logp - mean_logp)
    return torch.where(valid, cov, torch.zeros_like(cov))


class EntropyControl:
    """No control: plain GRPO. Subclasses override what their method changes."""

    name = "none"

    def plan(self, stats: TokenStats, generator: torch.Generator) -> TokenPlan:
        return TokenPlan.default(stats)

    def bonus(self) -> float:
        """Coefficient ``c`` of the ``-c·H_mean`` term in the loss (the adaptive entropy bonus)."""
        return 0.0

    def rollout_temperature(self) -> float | None:
        """Temperature of an auxiliary rollout this step (target entropy), or ``None``."""
        return None

    def auxiliary_prompts(self, prompts: int) -> int:
        """How many of a step's ``prompts`` go to the auxiliary rollout (none without target entropy)."""
        return 0

    def after_step(self, entropy_mean: float) -> None:
        """Adapt to the mean token entropy (nats) of the step's rollouts."""

    def warnings(self, updates_per_rollout: int) -> list[str]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ClipCov(EntropyControl):
    """Clip-Cov (Cui et al., arXiv 2505.22617): among tokens whose covariance ``cov_t`` lies in
    ``(lower, upper)``, a random ``fraction`` of the valid tokens (at least one) pass no gradient."""

    name = "clip-cov"

    def __init__(self, fraction: float = 0.0002, lower: float = 1.0, upper: float = 5.0) -> None:
        self.fraction = in_range("fraction", fraction, 0.0, 1.0, open_low=True)
        self.lower = in_range("lower", lower, -math.inf)
        self.upper = in_range("upper", upper, -math.inf)
        if self.upper <= self.lower:
            raise ValueError(f"`upper` ({upper}) must be greater than `lower` ({lower})")

    def plan(self, stats: TokenStats, generator: torch.Generator) -> TokenPlan:
        plan = TokenPlan.default(stats)
        cov = covariance(stats)
        valid = stats.mask.bool() & ~stats.reinforce
        candidates = torch.nonzero((valid & (cov > self.lower) & (cov < self.upper)).view(-1)).view(-1)
        budget = min(max(int(self.fraction * int(valid.sum())), 1), candidates.numel())
        if budget:
            chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:budget]]
            plan.detach.view(-1)[chosen] = True
        return plan


class KLCov(EntropyControl):
    """KL-Cov (Cui et al.): the top ``fraction`` of valid tokens by covariance (at least one) get
    ``coef·|logp - old_logp|`` added; no PPO clipping for any token. The penalty is zero on-policy, so
    it acts only when a rollout feeds more than one optimiser update."""

    name = "kl-cov"

    def __init__(self, fraction: float = 0.002, coef: float = 1.0) -> None:
        self.fraction = in_range("fraction", fraction, 0.0, 1.0, open_low=True)
        self.coef = in_range("coef", coef, 0.0, open_low=True)

    def plan(self, stats: TokenStats, generator: torch.Generator) -> TokenPlan:
        plan = replace(TokenPlan.default(stats), penalty_coef=self.coef, clip=False)
        valid = stats.mask.bool() & ~stats.reinforce
        count = int(valid.sum())
        if count:
            cov = covariance(stats).masked_fill(~valid, -math.inf).view(-1)
            k = max(int(self.fraction * count), 1)
            plan.penalised.view(-1)[torch.topk(cov, k).indices] = True
        return plan

    def warnings(self, updates_per_rollout: int) -> list[str]:
        if updates_per_rollout > 1:
            return []
        return ["KL-Cov cannot act: with one optimiser update per rollout the policy is on-policy "
                "(logp = old_logp), so its penalty |logp - old_logp| is zero. Set `epochs` > 1 or `mini_batches` > 1."]


class ForkingTokens(EntropyControl):
    """High-entropy "forking" tokens only (Wang et al., arXiv 2506.01939): the loss keeps the top ``rho``
    of the mini-batch's valid tokens by entropy (at least one; ties broken by position) and is normalised
    by the number kept."""

    name = "forking-tokens"

    def __init__(self, rho: float = 0.2) -> None:
        self.rho = in_range("rho", rho, 0.0, 1.0, open_low=True)

    def plan(self, stats: TokenStats, generator: torch.Generator) -> TokenPlan:
        plan = TokenPlan.default(stats)
        valid = stats.mask.bool() & ~stats.reinforce
        count = int(valid.sum())
        keep = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
        if count:
            k = max(math.ceil(self.rho * count), 1)
            scores = stats.entropy.masked_fill(~valid, -math.inf).view(-1)
            order = torch.sort(scores, descending=True, stable=True).indices
            keep[order[:k]] = True
        plan.loss_mask = (keep.view_as(valid) & valid) | (stats.reinforce & stats.mask.bool())
        return plan


class Steer(EntropyControl):
    """STEER (arXiv 2510.10150): weight each token by its estimated entropy change
    ``Ω = (A / π_old(a))·p(1-p)(ln p + H)`` with ``p = π_old(a)``.

    ``mode="linear"``: ``w = clamp(w_max - (|Ω| - m_min)(w_max - w_min)/(m_max - m_min), w_min, w_max)``;
    ``mode="exp"``: ``w = clamp(exp(-k|Ω|), w_min, 1)``, ``k = -ln(w_min) / max(m_max, 0.02)``.
    ``m_min`` / ``m_max`` default to the mini-batch's smallest and largest ``|Ω|`` over valid tokens."""

    name = "steer"
    MODES = ("linear", "exp")

    def __init__(self, mode: str = "linear", w_min: float = 0.8, w_max: float = 1.2,
                 m_min: float | None = None, m_max: float | None = None) -> None:
        if mode not in self.MODES:
            raise ValueError(f"`mode` must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.w_min = in_range("w_min", w_min, 0.0, 1.0, open_low=True)
        self.w_max = in_range("w_max", w_max, 1.0)
        self.m_min = None if m_min is None else in_range("m_min", m_min, 0.0)
        self.m_max = None if m_max is None else in_range("m_max", m_max, 0.0)
        if self.m_min is not None and self.m_max is not None and self.m_max <= self.m_min:
            raise ValueError(f"`m_max` ({m_max}) must be greater than `m_min` ({m_min})")

    def omega(self, stats: TokenStats) -> torch.Tensor:
        p = stats.old_logp.exp()
        return (stats.advantages / p) * p * (1.0 - p) * (stats.old_logp + stats.entropy)

    def plan(self, stats: TokenStats, generator: torch.Generator) -> TokenPlan:
        plan = TokenPlan.default(stats)
        valid = stats.mask.bool() & ~stats.reinforce
        if not valid.any():
            return plan
        size = self.omega(stats).abs()
        m_min = float(size[valid].min()) if self.m_min is None else self.m_min
        m_max = float(size[valid].max()) if self.m_max is None else self.m_max
        if self.mode == "linear":
            span = m_max - m_min
            weight = (self.w_max - (size - m_min) * (self.w_max - self.w_min) / span) if span > 0 else torch.full_like(size, self.w_max)
            weight = weight.clamp(self.w_min, self.w_max)
        else:
            k = -math.log(self.w_min) / max(m_max, 0.02)
            weight = torch.exp(-k * size).clamp(self.w_min, 1.0)
        plan.weight = torch.where(valid, weight, torch.ones_like(weight))
        return plan


class _Adaptive(EntropyControl):
    """Shared book-keeping of the controls that steer towards a target entropy (nats)."""

    def __init__(self, target: float | None) -> None:
        if target is None:
            raise ValueError(f"entropy control {self.name!r} needs `target`, the entropy (nats) to hold")
        self.target = in_range("target", target, 0.0, open_low=True)
        self.last_entropy: float | None = None

    def after_step(self, entropy_mean: float) -> None:
        self.last_entropy = float(entropy_mean)

    def state_dict(self) -> dict[str, Any]:
        return {"last_entropy": self.last_entropy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_entropy = state["last_entropy"]


class EntropyBonus(_Adaptive):
    """Adaptive entropy bonus (Skywork-OR1): loss ``-= c·H_mean``; after each step ``c += delta`` when the
    rollout entropy is at or below ``target``, else ``c -= delta``, clamped to ``[0, max_coef]``."""

    name = "entropy-bonus"

    def __init__(self, target: float | None = None, coef: float = 0.0, delta: float = 0.002, max_coef: float = 0.05) -> None:
        super().__init__(target)
        self.max_coef = in_range("max_coef", max_coef, 0.0)
        self.coef = in_range("coef", coef, 0.0, self.max_coef)
        self.delta = in_range("delta", delta, 0.0, open_low=True)

    def bonus(self) -> float:
        return self.coef

    def after_step(self, entropy_mean: float) -> None:
        super().after_step(entropy_mean)
        step = self.delta if entropy_mean <= self.target else -self.delta
        self.coef = min(max(self.coef + step, 0.0), self.max_coef)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "coef": self.coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.coef = state["coef"]


class TargetEntropy(_Adaptive):
    """Target entropy by temperature (AEPO, arXiv 2510.08141): when the last step's mean rollout entropy
    is below ``target``, an auxiliary rollout of ``fraction`` of the step's prompts is drawn at
    ``t_high``, else at ``t_low`` (at 1.0 before any measurement). Its samples with positive advantage
    (within their group) enter the loss with unit advantage as a REINFORCE term; the rest are dropped."""

    name = "target-entropy"

    def __init__(self, target: float | None = None, t_high: float = 1.2, t_low: float = 0.8, fraction: float = 0.25) -> None:
        super().__init__(target)
        self.t_high = in_range("t_high", t_high, 0.0, open_low=True)
        self.t_low = in_range("t_low", t_low, 0.0, open_low=True)
        self.fraction = in_range("fraction", fraction, 0.0, 1.0, open_low=True)
        if self.fraction >= 1.0:
            raise ValueError("`fraction` must be below 1: the auxiliary rollout replaces part of the batch, not all of it")

    def rollout_temperature(self) -> float | None:
        if self.last_entropy is None:
            return 1.0
        return self.t_high if self.last_entropy < self.target else self.t_low

    def auxiliary_prompts(self, prompts: int) -> int:
        """How many of a step's ``prompts`` the auxiliary rollout takes (at least one, never all)."""
        if prompts < 2:
            raise ValueError("target-entropy needs `prompts_per_step` >= 2 (its auxiliary rollout replaces some of them)")
        return min(max(round(self.fraction * prompts), 1), prompts - 1)


CONTROLS: dict[str, type[EntropyControl]] = {
    cls.name: cls for cls in (EntropyControl, EntropyBonus, ClipCov, KLCov, ForkingTokens, Steer, TargetEntropy)
}


def make_control(method: str = "none", **params: Any) -> EntropyControl:
    """The entropy control called ``method`` (see :data:`CONTROLS`) with its parameters.

    Example:
        >>> make_control("forking-tokens", rho=0.2)
        ForkingTokens(rho=0.2)
        >>> make_control("kl-cov").warnings(updates_per_rollout=1)[0][:22]
        'KL-Cov cannot act: wit'
    """
    if method not in CONTROLS:
        raise ValueError(f"unknown entropy control {method!r}; known: {', '.join(CONTROLS)}")
    try:
        return CONTROLS[method](**params)
    except TypeError as error:
        raise ValueError(f"entropy control {method!r}: {error}") from None


def aepo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """AEPO's auxiliary rows: advantage 1 for samples above their group's mean reward, else 0 (dropped)."""
    groups = rewards.double().view(-1, group_size)
    return (groups > groups.mean(dim=1, keepdim=True)).view(-1).float()
