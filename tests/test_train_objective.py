"""The GRPO objective and every entropy-control transform against its formula, on hand-built tensors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrodec.train import (
    ClipCov, EntropyBonus, EntropyControl, ForkingTokens, KLCov, Steer, TargetEntropy, TokenPlan, TokenStats,
    aggregate, clipped_surrogate, group_advantages, k3_kl, make_control, policy_loss,
)
from entrodec.train.entropy_control import aepo_advantages, covariance

EPS = 0.2


def stats_of(old_logp, advantages, mask=None, entropy=None, reinforce=None):
    old_logp = torch.as_tensor(old_logp, dtype=torch.float32)
    mask = torch.ones_like(old_logp, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    entropy = torch.ones_like(old_logp) if entropy is None else torch.as_tensor(entropy, dtype=torch.float32)
    reinforce = torch.zeros_like(mask) if reinforce is None else torch.as_tensor(reinforce, dtype=torch.bool)
    return TokenStats(old_logp, torch.as_tensor(advantages, dtype=torch.float32), mask, entropy, reinforce)


# ---------------------------------------------------------------- GRPO core
def test_group_advantages_formula():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    a = group_advantages(rewards, 4)
    g = np.array([1.0, 0.0, 0.0, 1.0])
    expected = (g - g.mean()) / (g.std(ddof=1) + 1e-4)
    assert np.allclose(a[:4].numpy(), expected, atol=1e-6)
    assert torch.equal(a[4:], torch.zeros(4))  # a group that agrees teaches nothing


def test_group_advantages_rejects_partial_groups():
    with pytest.raises(ValueError, match="whole groups of 3"):
        group_advantages(torch.zeros(4), 3)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 5.0), st.floats(-3.0, 3.0), st.floats(0.0, 0.9), st.floats(0.0, 2.0))
def test_clipped_surrogate_formula(ratio, advantage, eps_low, eps_high):
    got = float(clipped_surrogate(torch.tensor(ratio, dtype=torch.float64), torch.tensor(advantage, dtype=torch.float64), eps_low, eps_high))
    clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
    assert math.isclose(got, -min(ratio * advantage, clipped * advantage), rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.floats(-20, 0), st.floats(-20, 0))
def test_k3_formula_and_sign(ref, logp):
    got = float(k3_kl(torch.tensor(ref, dtype=torch.float64), torch.tensor(logp, dtype=torch.float64)))
    assert math.isclose(got, math.exp(ref - logp) - (ref - logp) - 1, rel_tol=1e-9, abs_tol=1e-12)
    assert got >= 0.0
    assert float(k3_kl(torch.tensor(ref), torch.tensor(ref))) == 0.0


def test_aggregations_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert float(aggregate(loss, mask, "token-mean")) == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert float(aggregate(loss, mask, "sequence-mean")) == pytest.approx((2.0 + 4.0) / 2)
    with pytest.raises(ValueError, match="`aggregation` must be one of token-mean, sequence-mean"):
        aggregate(loss, mask, "sum")


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(1, 5), st.sampled_from(["token-mean", "sequence-mean"]), st.integers(0, 10**6))
def test_aggregate_slices_add_up_to_the_batch(rows, length, how, seed):
    """Gradient accumulation: micro-batches with the mini-batch's normaliser sum to the whole loss."""
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(rows, length, generator=g)
    mask = torch.rand(rows, length, generator=g) > 0.3
    whole = aggregate(loss, mask, how)
    parts = sum(aggregate(loss[i:i + 1], mask[i:i + 1], how, float(mask.sum()), rows) for i in range(rows))
    assert float(parts) == pytest.approx(float(whole), abs=1e-5)


# ---------------------------------------------------------------- policy loss and plans
def test_no_control_is_the_clipped_surrogate_with_its_gradient():
    stats = stats_of([[-1.0, -2.0, -0.5]], [[1.0, -1.0, 2.0]])
    logp = torch.tensor([[-0.7, -2.5, -0.5]], requires_grad=True)
    plan = EntropyControl().plan(stats, torch.Generator())
    loss = policy_loss(logp, stats, plan, EPS, EPS)
    ratio = torch.exp(logp.detach() - stats.old_logp)
    assert torch.allclose(loss, clipped_surrogate(ratio, stats.advantages, EPS, EPS))
    loss.sum().backward()
    # token 0: ratio 1.35 > 1.2 with A > 0 is clipped (no gradient); token 1: ratio 0.61 < 0.8 with A < 0 clipped
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == 0
    assert float(logp.grad[0, 2]) == pytest.approx(-2.0)  # -A·ratio, ratio 1


def test_covariance_formula():
    stats = stats_of([[-1.0, -3.0], [-2.0, -0.1]], [[2.0, 2.0], [-1.0, -1.0]], mask=[[1, 1], [1, 0]])
    a = np.array([2.0, 2.0, -1.0])
    lp = np.array([-1.0, -3.0, -2.0])
    expected = (a - a.mean()) * (lp - lp.mean())
    got = covariance(stats)
    assert np.allclose(got[stats.mask].numpy(), expected, atol=1e-6)
    assert got[1, 1] == 0  # padding has no covariance


def _cov_stats():
    # 40 tokens: advantages ±2 and log-probs spread so that covariances span (-8, 8)
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 10, generator=g) * 6
    adv = torch.tensor([2.0, -2.0, 1.0, -1.0]).view(4, 1).expand(4, 10).clone()
    return stats_of(old, adv)


def test_clip_cov_detaches_a_random_share_of_tokens_inside_the_bounds():
    stats = _cov_stats()
    control = ClipCov(fraction=0.1, lower=1.0, upper=5.0)
    plan = control.plan(stats, torch.Generator().manual_seed(1))
    cov = covariance(stats)
    assert int(plan.detach.sum()) == 4  # int(0.1 · 40)
    assert bool(((cov[plan.detach] > 1.0) & (cov[plan.detach] < 5.0)).all())
    assert torch.equal(plan.loss_mask, stats.mask)  # the normaliser is unchanged
    logp = stats.old_logp.clone().requires_grad_(True)
    loss = policy_loss(logp, stats, plan, EPS, EPS)
    loss.sum().backward()
    assert bool((logp.grad[plan.detach] == 0).all())
    assert torch.allclose(logp.grad[~plan.detach], -stats.advantages[~plan.detach])  # on-policy: -A
    assert torch.allclose(loss, clipped_surrogate(torch.ones_like(logp), stats.advantages, EPS, EPS))  # values kept
    # another generator picks other tokens; the budget is at least one token
    other = control.plan(stats, torch.Generator().manual_seed(2))
    assert not torch.equal(other.detach, plan.detach)
    assert int(ClipCov(fraction=1e-6).plan(stats, torch.Generator()).detach.sum()) == 1


def test_clip_cov_with_no_candidate_detaches_nothing():
    stats = stats_of([[-1.0, -1.0]], [[1.0, 1.0]])  # zero covariance everywhere
    assert int(ClipCov().plan(stats, torch.Generator()).detach.sum()) == 0


def test_kl_cov_penalises_the_top_covariance_tokens_without_clipping():
    stats = _cov_stats()
    control = KLCov(fraction=0.1, coef=0.5)
    plan = control.plan(stats, torch.Generator())
    cov = covariance(stats).view(-1)
    top = torch.topk(cov, 4).indices
    assert set(torch.nonzero(plan.penalised.view(-1)).view(-1).tolist()) == set(top.tolist())
    assert plan.clip is False
    # on-policy: the penalty is zero and the loss is plain -A·ratio = -A
    on = policy_loss(stats.old_logp.clone(), stats, plan, EPS, EPS)
    assert torch.allclose(on, -stats.advantages)
    # off-policy: a ratio of 2 with A > 0 is not clipped, and penalised tokens add coef·|Δ|
    delta = torch.full_like(stats.old_logp, math.log(2.0))
    off = policy_loss(stats.old_logp + delta, stats, plan, EPS, EPS)
    expected = -stats.advantages * 2.0 + 0.5 * plan.penalised * delta
    assert torch.allclose(off, expected, atol=1e-5)
    assert (off - (-stats.advantages * 2.0))[plan.penalised].min() > 0.3


def test_kl_cov_warns_when_it_cannot_act():
    assert KLCov().warnings(1) and "cannot act" in KLCov().warnings(1)[0]
    assert KLCov().warnings(2) == []


def test_forking_tokens_keep_the_top_rho_by_entropy_and_normalise_by_them():
    entropy = torch.tensor([[0.1, 2.0, 0.3, 1.5, 0.2], [3.0, 0.0, 0.4, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)  # 9.0 is padding
    stats = stats_of(torch.full((2, 5), -1.0), torch.ones(2, 5), mask=mask, entropy=entropy)
    plan = ForkingTokens(rho=0.3).plan(stats, torch.Generator())
    kept = {(0, 1), (0, 3), (1, 0)}  # ceil(0.3 · 9) = 3 highest: 3.0, 2.0, 1.5
    assert {tuple(x) for x in torch.nonzero(plan.loss_mask).tolist()} == kept
    loss = torch.arange(10, dtype=torch.float32).view(2, 5)
    assert float(aggregate(loss, plan.loss_mask, "token-mean")) == pytest.approx((1 + 3 + 5) / 3)


def test_steer_weights_match_the_formula():
    old = torch.tensor([[-0.1, -1.0, -2.0, -3.0]])
    adv = torch.tensor([[1.0, -1.0, 2.0, 0.5]])
    ent = torch.tensor([[0.5, 1.0, 2.5, 1.0]])
    stats = stats_of(old, adv, entropy=ent)
    p = old.exp().numpy()[0]
    omega = np.abs((adv.numpy()[0] / p) * p * (1 - p) * (np.log(p) + ent.numpy()[0]))
    lo, hi = omega.min(), omega.max()
    linear = np.clip(1.2 - (omega - lo) * (1.2 - 0.8) / (hi - lo), 0.8, 1.2)
    got = Steer("linear").plan(stats, torch.Generator()).weight.numpy()[0]
    assert np.allclose(got, linear, atol=1e-5)
    k = -math.log(0.8) / max(hi, 0.02)
    assert np.allclose(Steer("exp").plan(stats, torch.Generator()).weight.numpy()[0], np.clip(np.exp(-k * omega), 0.8, 1.0), atol=1e-5)
    fixed = Steer("linear", m_min=0.0, m_max=10.0).plan(stats, torch.Generator()).weight.numpy()[0]
    assert np.allclose(fixed, np.clip(1.2 - omega * 0.4 / 10.0, 0.8, 1.2), atol=1e-5)
    # the weights multiply the loss
    plan = Steer("linear").plan(stats, torch.Generator())
    assert torch.allclose(policy_loss(old.clone(), stats, plan, EPS, EPS), -adv * plan.weight)


def test_entropy_bonus_adapts_its_coefficient_and_resumes():
    bonus = EntropyBonus(target=1.0, coef=0.0, delta=0.01, max_coef=0.015)
    bonus.after_step(0.5)
    assert bonus.bonus() == pytest.approx(0.01)
    bonus.after_step(0.9)
    assert bonus.bonus() == pytest.approx(0.015)  # clamped
    bonus.after_step(2.0)
    assert bonus.bonus() == pytest.approx(0.005)
    restored = EntropyBonus(target=1.0, delta=0.01, max_coef=0.015)
    restored.load_state_dict(bonus.state_dict())
    assert restored.bonus() == bonus.bonus() and restored.last_entropy == 2.0


def test_target_entropy_picks_the_auxiliary_temperature():
    aepo = TargetEntropy(target=1.5, t_high=1.3, t_low=0.7, fraction=0.25)
    assert aepo.rollout_temperature() == 1.0  # nothing measured yet
    aepo.after_step(1.0)
    assert aepo.rollout_temperature() == 1.3  # below target: heat
    aepo.after_step(2.0)
    assert aepo.rollout_temperature() == 0.7
    assert aepo.auxiliary_prompts(8) == 2 and aepo.auxiliary_prompts(2) == 1
    with pytest.raises(ValueError, match="prompts_per_step` >= 2"):
        aepo.auxiliary_prompts(1)


def test_aepo_rows_are_a_reinforce_term_on_positive_samples():
    assert aepo_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.3, 0.3, 0.3, 0.3]), 4).tolist() == [1, 0, 1, 0, 0, 0, 0, 0]
    stats = stats_of([[-1.0, -2.0]], [[1.0, 1.0]], reinforce=[[True, True]])
    logp = stats.old_logp.clone().requires_grad_(True)
    loss = policy_loss(logp, stats, TokenPlan.default(stats), EPS, EPS)
    assert torch.allclose(loss, -logp.detach())
    loss.sum().backward()
    assert torch.equal(logp.grad, -torch.ones(1, 2))


@pytest.mark.parametrize("method, params, message", [
    ("bogus", {}, "unknown entropy control 'bogus'; known: none, entropy-bonus"),
    ("clip-cov", {"fraction": 0.0}, r"`fraction` must be in \(0.0, 1.0\], got 0.0"),
    ("clip-cov", {"lower": 3.0, "upper": 2.0}, r"`upper` \(2.0\) must be greater than `lower` \(3.0\)"),
    ("kl-cov", {"coef": -1}, r"`coef` must be in \(0.0, inf\), got -1"),
    ("forking-tokens", {"rho": 1.5}, r"`rho` must be in \(0.0, 1.0\], got 1.5"),
    ("steer", {"mode": "cubic"}, "`mode` must be one of linear, exp, got 'cubic'"),
    ("steer", {"w_min": 0.0}, r"`w_min` must be in \(0.0, 1.0\]"),
    ("entropy-bonus", {}, "needs `target`"),
    ("target-entropy", {"target": 1.0, "fraction": 1.0}, "`fraction` must be below 1"),
    ("clip-cov", {"rho": 0.2}, "entropy control 'clip-cov': .*unexpected keyword argument 'rho'"),
])
def test_control_arguments_are_checked(method, params, message):
    with pytest.raises(ValueError, match=message):
        make_control(method, **params)
