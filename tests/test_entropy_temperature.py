"""EntropyTemperature: each rule against its formula on hand-computed cases, HAPO's direction, errors."""

import math

import pytest
import torch
from transformers import LogitsProcessorList

from entrodec.decoding import EntropyTemperature, chain_from_yaml


def _t(processor, scores, input_ids=None):
    out = processor(input_ids, scores)
    return processor.last_temperature, out


def test_dynatemp_formula():
    # p = (0.5, 0.25, 0.25): H = 1.0397 nats, n = 3, Hn = H / ln 3 = 0.9464
    scores = torch.tensor([[0.5, 0.25, 0.25]]).log()
    t, out = _t(EntropyTemperature(kind="dynatemp", temperature=1.2, dynatemp_range=0.5, dynatemp_exponent=2.0), scores)
    hn = (-(0.5 * math.log(0.5) + 0.5 * math.log(0.25))) / math.log(3)
    expected = 0.7 + (1.7 - 0.7) * hn**2
    assert math.isclose(float(t), expected, rel_tol=1e-6)
    assert torch.allclose(out, scores / expected)


def test_dynatemp_low_end_clamps_at_zero_and_single_candidate_is_unchanged():
    one = torch.tensor([[2.0, -math.inf, -math.inf]])
    t, out = _t(EntropyTemperature(kind="dynatemp", temperature=0.8, dynatemp_range=1.0), one)
    assert float(t) == pytest.approx(0.8)  # n <= 1: T0
    assert torch.equal(torch.isfinite(out), torch.isfinite(one))
    peaked = torch.tensor([[50.0, 0.0, 0.0]])  # H ≈ 0: T ≈ max(0, T0 − Δ) = 0, effectively greedy
    t, out = _t(EntropyTemperature(kind="dynatemp", temperature=0.8, dynatemp_range=1.0), peaked)
    assert float(t) == pytest.approx(0.0, abs=1e-12)
    assert torch.softmax(out, -1).tolist() == [[1.0, 0.0, 0.0]]


def test_edt_formula_and_zero_entropy():
    scores = torch.tensor([[0.7, 0.2, 0.1]]).log()
    h = -sum(p * math.log(p) for p in (0.7, 0.2, 0.1))
    t, _ = _t(EntropyTemperature(kind="edt", temperature=1.5, theta=0.3, base=0.8), scores)
    assert math.isclose(float(t), 1.5 * 0.8 ** (0.3 / h), rel_tol=1e-6)
    one_hot = torch.tensor([[0.0, -math.inf, -math.inf]])
    t, out = _t(EntropyTemperature(kind="edt", temperature=1.5), one_hot)
    assert float(t) == 0.0 and torch.isfinite(out).tolist() == [[True, False, False]]


def test_per_row_parameters():
    scores = torch.zeros(2, 4)
    proc = EntropyTemperature(kind="dynatemp", temperature=torch.tensor([1.0, 2.0]), dynatemp_range=torch.tensor([0.5, 0.0]))
    t, _ = _t(proc, scores)
    assert t.tolist() == pytest.approx([1.5, 2.0])


def test_hapo_cools_confident_tokens_and_heats_uncertain_ones():
    proc = EntropyTemperature(kind="hapo", temperature=1.0, tau=0.5, pivot=0.5, window=16)
    torch.manual_seed(0)
    for step in range(16):  # alternate confident and uncertain rows to fill the window
        scale = 8.0 if step % 2 else 0.2
        proc(None, torch.randn(1, 64) * scale)
    t_low, _ = _t(proc, torch.tensor([[30.0] + [0.0] * 63]))
    t_high, _ = _t(proc, torch.zeros(1, 64))
    assert float(t_low) < 1.0 < float(t_high)
    assert 0.5 <= float(t_low) and float(t_high) <= 1.5  # |ĥ| <= 1 bounds T to T0(1 ± τ)


def test_hapo_first_tokens_use_t0_and_windows_reset_per_generation():
    proc = EntropyTemperature(kind="hapo", temperature=0.9, tau=0.3)
    ids = torch.zeros(1, 5, dtype=torch.long)
    t, _ = _t(proc, torch.randn(1, 10), ids)
    assert float(t) == pytest.approx(0.9)
    proc(torch.zeros(1, 6, dtype=torch.long), torch.randn(1, 10))
    assert len(proc._history[0]) == 2
    proc(torch.zeros(1, 3, dtype=torch.long), torch.randn(1, 10))  # a new, shorter sequence: new generation
    assert len(proc._history[0]) == 1


def test_hapo_statistics_from_outside():
    proc = EntropyTemperature(kind="hapo", temperature=1.0, tau=0.2, pivot=0.8)
    proc.set_statistics(torch.tensor([0.1, 0.2, 0.5, 1.0, 2.0, 3.0]))
    t_low, _ = _t(proc, torch.tensor([[20.0, 0.0, 0.0, 0.0]]))
    t_high, _ = _t(proc, torch.zeros(1, 1000))
    assert float(t_low) == pytest.approx(0.8)   # far below the pivot: ĥ clamps at −1
    assert float(t_high) == pytest.approx(1.2)  # far above: ĥ clamps at +1


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="nope"), "`kind` must be one of 'dynatemp', 'edt', 'hapo', got 'nope'"),
    (dict(temperature=-1.0), "`temperature` must be in [0, inf], got -1"),
    (dict(dynatemp_range=-0.1), "`dynatemp_range` must be in [0, inf], got -0.1"),
    (dict(dynatemp_exponent=0.0), "`dynatemp_exponent` must be in (0, inf], got 0"),
    (dict(theta=0.0), "`theta` must be in (0, inf], got 0"),
    (dict(base=1.0), "`base` must be in (0, 1), got 1"),
    (dict(tau=1.0), "`tau` must be in [0, 1), got 1"),
    (dict(pivot=1.5), "`pivot` must be in [0, 1], got 1.5"),
    (dict(window=1), "`window` must be in [2, inf], got 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        EntropyTemperature(**kwargs)
    assert message in str(error.value)


def test_in_yaml_and_hf_generate(tiny_model):
    chain = chain_from_yaml("chain:\n  - entropy_temperature: {kind: edt, temperature: 1.2, theta: 0.2}\n  - top_h: 0.5\n")
    assert isinstance(chain.processors[0], EntropyTemperature)
    model, tok = tiny_model
    batch = tok(["hello"], return_tensors="pt")
    hapo = EntropyTemperature(kind="hapo", temperature=1.0, window=4)
    out = model.generate(**batch, logits_processor=LogitsProcessorList([hapo]), do_sample=True, top_k=0, max_new_tokens=6)
    assert out.shape[1] == batch["input_ids"].shape[1] + 6
    assert len(hapo._history[0]) == 4  # the rolling window followed the generation


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from strategies import logit_rows  # noqa: E402


@pytest.mark.parametrize("kind", ["dynatemp", "edt", "hapo"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores=logit_rows(), t0=st.floats(0.0, 3.0))
def test_never_fails_and_keeps_support(kind, dtype, scores, t0):
    scores = scores.clamp(-6e4, 6e4).to(dtype)
    proc = EntropyTemperature(kind=kind, temperature=t0, dynatemp_range=0.5, window=4)
    for _ in range(3):
        out = proc(None, scores)
    assert out.dtype == dtype and out.shape == scores.shape
    t = proc.last_temperature
    assert bool(torch.isfinite(t).all()) and bool((t >= 0).all())
    kept = torch.isfinite(out)
    assert bool((kept <= torch.isfinite(scores)).all())
    assert bool(kept.any(dim=-1).all())
