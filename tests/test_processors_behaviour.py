"""Every processor on the inputs that break naive code: -inf entries, one-token vocabularies, ties,
huge logits, fp16/bf16; per-row parameters; argument validation."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrodec.decoding import (
    EpsilonCutoff,
    EtaCutoff,
    MinP,
    Temperature,
    TopH,
    TopK,
    TopNSigma,
    TopP,
    Typical,
)

from strategies import logit_rows

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# name -> (factory from a per-row parameter, a sampled valid parameter strategy)
TRUNCATIONS = {
    "top_k": (lambda v: TopK(v), st.integers(0, 8)),
    "top_p": (lambda v: TopP(v), st.floats(0.0, 1.0)),
    "min_p": (lambda v: MinP(v), st.floats(0.0, 1.0)),
    "typical": (lambda v: Typical(v), st.floats(0.01, 1.0)),
    "epsilon": (lambda v: EpsilonCutoff(v), st.floats(0.0, 0.99)),
    "eta": (lambda v: EtaCutoff(v), st.floats(0.0, 0.99)),
    "top_n_sigma": (lambda v: TopNSigma(v), st.floats(0.0, 5.0)),
    "top_h_paper": (lambda v: TopH(v, rule="paper"), st.floats(0.01, 1.0)),
    "top_h_hf": (lambda v: TopH(v, rule="hf"), st.floats(0.01, 1.0)),
}


@pytest.mark.parametrize("name", sorted(TRUNCATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@SETTINGS
@given(data=st.data())
def test_truncation_keeps_a_subset_and_never_empties_a_row(name, dtype, data):
    make, values = TRUNCATIONS[name]
    scores = data.draw(logit_rows()).clamp(min=-6e4, max=6e4).to(dtype)
    value = data.draw(values)
    out = make(value)(None, scores)
    assert out.dtype == dtype and out.shape == scores.shape
    kept = torch.isfinite(out)
    assert bool(kept.any(dim=-1).all()), "a row lost every token"
    assert bool((kept <= torch.isfinite(scores)).all()), "a -inf token came back"
    assert torch.equal(out[kept], scores[kept]), "a truncation changed a kept logit"
    # a most likely token always survives (typical sampling ranks by typicality instead)
    if name != "typical":
        assert torch.equal(out.float().amax(dim=-1), scores.float().amax(dim=-1))


@pytest.mark.parametrize("name", sorted(TRUNCATIONS))
@SETTINGS
@given(data=st.data())
def test_per_row_parameters_equal_row_by_row(name, data):
    make, values = TRUNCATIONS[name]
    scores = data.draw(logit_rows())
    row_values = [data.draw(values) for _ in range(scores.shape[0])]
    dtype = torch.int64 if name == "top_k" else torch.float64
    batched = make(torch.tensor(row_values, dtype=dtype))(None, scores)
    for row, value in enumerate(row_values):
        single = make(value)(None, scores[row : row + 1])
        assert torch.equal(torch.isfinite(batched[row]), torch.isfinite(single[0]))


@pytest.mark.parametrize("name", sorted(TRUNCATIONS))
def test_one_token_vocabulary(name):
    make, _ = TRUNCATIONS[name]
    value = {"top_k": 1, "typical": 0.5}.get(name, 0.5)
    out = make(value)(None, torch.tensor([[3.0]]))
    assert torch.equal(out, torch.tensor([[3.0]]))


@pytest.mark.parametrize("name", sorted(TRUNCATIONS))
def test_all_but_one_masked(name):
    make, _ = TRUNCATIONS[name]
    value = {"top_k": 2, "typical": 0.5}.get(name, 0.5)
    scores = torch.full((2, 6), -math.inf)
    scores[0, 4] = 1.5
    scores[1, 0] = -20.0
    out = make(value)(None, scores)
    assert torch.equal(out, scores)


@pytest.mark.parametrize("name", ["top_k", "min_p", "epsilon", "eta", "top_n_sigma"])
def test_min_tokens_to_keep(name):
    make_cls = {"top_k": TopK, "min_p": MinP, "epsilon": EpsilonCutoff, "eta": EtaCutoff, "top_n_sigma": TopNSigma}[name]
    value = {"top_k": 1, "min_p": 0.9, "epsilon": 0.5, "eta": 0.5, "top_n_sigma": 0.0}[name]
    scores = torch.tensor([[5.0, 1.0, 3.0, 2.0, 4.0]])
    out = make_cls(value, min_tokens_to_keep=3)(None, scores)
    assert torch.isfinite(out).tolist() == [[True, False, True, False, True]]


def test_top_h_min_tokens_to_keep_follows_its_order():
    scores = torch.tensor([[2.0, 2.0, 2.0, -5.0]])  # three-way tie at the top
    out = TopH(0.01, min_tokens_to_keep=2)(None, scores)
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]  # lowest ids win the tie


def test_top_h_tie_broken_by_lower_id():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert torch.isfinite(TopH(0.05)(None, scores)).tolist() == [[False, True, False, False]]


def test_top_h_alpha_one_keeps_whole_support():
    scores = torch.randn(4, 300)
    scores[:, ::7] = -math.inf
    assert torch.equal(TopH(1.0)(None, scores), scores)


def test_top_h_hand_computed_sizes():
    # uniform over n: H(q_k) = ln k <= 0.4 ln 1000, so k <= 1000^0.4 = 15.85
    assert int(torch.isfinite(TopH(0.4)(None, torch.zeros(1, 1000))).sum()) == 15
    # p = (.97, .01, .01, .01): H(p) = 0.1677, bound 0.0671; H(q_2) = 0.0569 <= bound < H(q_3) = 0.1128
    peaked = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).log()
    assert torch.isfinite(TopH(0.4)(None, peaked)).tolist() == [[True, True, False, False]]
    # zero entropy: one token holds all the mass; alpha·H(p) = 0 keeps it alone
    one_hot = torch.tensor([[0.0, -math.inf, -math.inf]])
    assert torch.equal(TopH(0.4)(None, one_hot), one_hot)


@SETTINGS
@given(logit_rows(), st.floats(0.05, 10.0))
def test_temperature_divides(scores, t):
    out = Temperature(t)(None, scores)
    finite = torch.isfinite(scores)
    assert torch.equal(torch.isfinite(out), finite)
    assert torch.allclose(out[finite], scores[finite] / t, rtol=1e-6, atol=0)


def test_temperature_zero_is_greedy_and_per_row():
    scores = torch.tensor([[1.0, 3.0, 3.0], [1.0, 3.0, 2.0]])
    out = Temperature(torch.tensor([0.0, 2.0]))(None, scores)
    assert torch.isfinite(out[0]).tolist() == [False, True, False]
    assert torch.allclose(out[1], scores[1] / 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_temperature_half_precision_never_overflows(dtype):
    big = torch.finfo(dtype).max
    scores = torch.tensor([[big, -big, 1.0, -math.inf]], dtype=dtype)
    out = Temperature(0.5)(None, scores)
    assert out.dtype == dtype
    assert torch.isfinite(out).tolist() == [[True, True, True, False]]
    assert torch.softmax(out.double(), -1)[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    small = torch.tensor([[3.0, 1.0, -math.inf]], dtype=dtype)
    assert torch.equal(Temperature(2.0)(None, small).float(), small.float() / 2)  # no overflow: plain z/T


def test_top_n_sigma_ignores_inf_and_is_temperature_invariant():
    scores = torch.tensor([[10.0, 9.0, 1.0, 0.0, -math.inf, -math.inf]])
    kept = torch.isfinite(TopNSigma(1.0)(None, scores))
    assert kept.tolist() == [[True, True, False, False, False, False]]
    assert torch.equal(torch.isfinite(TopNSigma(1.0)(None, scores / 3.7)), kept)


def test_min_p_zero_and_one():
    scores = torch.tensor([[1.0, 1.0, 0.5, -3.0]])
    assert torch.equal(MinP(0.0)(None, scores), scores)
    assert torch.isfinite(MinP(1.0)(None, scores)).tolist() == [[True, True, False, False]]


def test_top_k_zero_disables():
    scores = torch.randn(2, 10)
    assert torch.equal(TopK(0)(None, scores), scores)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TopH(alpha=0.0), "`alpha` must be in (0, 1], got 0"),
        (lambda: TopH(alpha=1.5), "`alpha` must be in (0, 1], got 1.5"),
        (lambda: TopH(alpha=torch.tensor([0.4, -1.0])), "`alpha` must be in (0, 1], got -1"),
        (lambda: TopH(rule="paperr"), "`rule` must be one of 'paper', 'hf', got 'paperr'"),
        (lambda: Temperature(-0.5), "`temperature` must be in [0, inf], got -0.5"),
        (lambda: Temperature(float("nan")), "`temperature` must be in [0, inf], got nan"),
        (lambda: MinP(1.2), "`min_p` must be in [0, 1], got 1.2"),
        (lambda: MinP(-0.1), "`min_p` must be in [0, 1], got -0.1"),
        (lambda: TopK(-1), "`top_k` must be in [0, inf], got -1"),
        (lambda: TopP(1.01), "`top_p` must be in [0, 1], got 1.01"),
        (lambda: Typical(0.0), "`typical_p` must be in (0, 1], got 0"),
        (lambda: EpsilonCutoff(1.0), "`epsilon` must be in [0, 1), got 1"),
        (lambda: EtaCutoff(-0.1), "`epsilon` must be in [0, 1), got -0.1"),
        (lambda: TopNSigma(-1.0), "`n` must be in [0, inf], got -1"),
        (lambda: TopP(0.9, min_tokens_to_keep=0), "`min_tokens_to_keep` must be an integer >= 1, got 0"),
        (lambda: TopH(torch.ones(2, 2)), "`alpha` as a tensor must be 1-D"),
    ],
)
def test_bad_arguments_name_the_argument(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TopK(2.5), "`top_k` must be an integer, got 2.5"),
        (lambda: TopK(torch.tensor([1.0, 2.0])), "`top_k` must be an integer tensor"),
        (lambda: MinP("0.1"), "`min_p` must be a number or a 1-D tensor, got str"),
    ],
)
def test_bad_types_name_the_argument(make, message):
    with pytest.raises(TypeError) as error:
        make()
    assert message in str(error.value)


def test_row_parameter_length_must_match_batch():
    with pytest.raises(ValueError, match="`min_p` has 3 values but the scores have 2 rows"):
        MinP(torch.tensor([0.1, 0.2, 0.3]))(None, torch.randn(2, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_temperature_saturates_instead_of_overflowing(dtype):
    scores = torch.tensor([[0.5, 0.25, -math.inf]], dtype=dtype)
    out = Temperature(1e-300 if dtype == torch.float64 else 1e-44)(None, scores)
    assert out.dtype == dtype and bool(torch.isfinite(out[0, :2]).all())
    assert torch.softmax(out.double(), -1)[0].tolist() == [1.0, 0.0, 0.0]
