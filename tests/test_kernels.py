"""The Numba CPU kernels against the torch reference: exact kept sets (boundary-rounding cases are
counted and may be skipped), the fused draw against the reference draw, telemetry, generate()
token for token, and the CUDA kernels through Numba's simulator in a subprocess."""

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrodec.decoding import (
    EntropyTemperature,
    EpsilonCutoff,
    EtaCutoff,
    MinP,
    SamplerChain,
    Temperature,
    TopH,
    TopK,
    TopNSigma,
    TopP,
    Typical,
    generate,
)
from entrodec.decoding.draw import race_draw, step_keys, token_uniforms
from entrodec.decoding.entropy import entropy
from entrodec.decoding.telemetry import measure_step
from entrodec.kernels import backend_for, use_kernels

from strategies import logit_rows
from test_processors_parity import paper_algorithm_1

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEAR: dict[str, list[int]] = {}  # rule -> [cases where kernel and reference differed at a boundary, total]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _tally(name: str, near: bool) -> None:
    counts = NEAR.setdefault(name, [0, 0])
    counts[0] += int(near)
    counts[1] += 1


def _probs(z: np.ndarray) -> np.ndarray:
    finite = np.isfinite(z)
    w = np.where(finite, np.exp(np.where(finite, z - z[finite].max(), 0.0)), 0.0)
    return w / w.sum()


def _descending(z: np.ndarray) -> np.ndarray:
    return np.argsort(-np.where(np.isfinite(z), z, -np.inf), kind="stable")


# Near-boundary tests, per rule, on one float64 row: the reference works in float32 where the kernel
# works in float64, so a token within rounding of the rule's threshold may land on either side.
def _near_min_p(z, p):
    finite = np.isfinite(z)
    gap = z - z[finite].max() - math.log(p)
    return bool((finite & (np.abs(gap) < 2e-6 * (1 + np.abs(z)))).any())


def _near_top_p(z, p):
    order = _descending(z)
    probs = _probs(z)[order]
    before = np.cumsum(probs) - probs
    return bool((np.abs(before - p) < 1e-5).any())


def _near_top_h_paper(z, alpha):
    # tokens whose probability underflows to 0 tie in the reference's probability order (ties by id),
    # while the kernel orders them by logit: min_tokens_to_keep may pick different ones among them
    underflow = bool((np.isfinite(z) & (_probs(z) == 0)).any())
    return paper_algorithm_1(z, alpha)[1] or underflow


def _near_top_h_hf(z, alpha):
    order = _descending(z)[: min(100, len(z))]
    top = z[order]
    top_finite = np.isfinite(top)
    q = np.where(top_finite, np.exp(np.where(top_finite, top - top[top_finite].max(), 0.0)), 0.0)
    log_g = math.log(q.sum())
    q = q / q.sum()
    terms = np.where(q > 0, -q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    tau = alpha * terms.sum()
    x = np.where(top_finite, top[top_finite].max() - top, np.inf)
    underflow = np.abs(x + log_g - 150 * math.log(2)) < 1e-3
    # the float32 reference loses ~1e-6 nats on the head's -q ln q when q is within 1e-6 of 1, and its
    # logits less their logsumexp (from which it takes H, hence tau) are rounded at the logits' magnitude
    margin = 1e-5 * tau + 2e-6 + _hf_normalisation_error(z)
    return bool((np.abs(np.cumsum(terms) - tau) < margin).any() or underflow.any())


def _hf_normalisation_error(z):
    """A bound on the float32 reference's error in H (nats) from rounding ``z − logsumexp(z)``: a few
    ulps of the largest logit: 4e-3 nats at |z| ~ 8,000."""
    return 2.0**-21 * float(np.abs(z[np.isfinite(z)]).max())


def _near_epsilon(z, eps, resolution=0.0):
    """Whether a probability lies within rounding of ``eps``: 1e-5 relative, or ``resolution``, the
    smallest subnormal of the dtype in which the reference's softmax holds them (below it a bf16 or fp16
    probability is 0, where the kernels' float32 reading keeps ~1e-43 or ~1e-8)."""
    p = _probs(z)
    return bool((np.abs(p - eps) < 1e-5 * eps + resolution).any())


def _near_eta(z, eps, resolution=0.0):
    """_near_epsilon at eta's cut-off."""
    p = _probs(z)
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0))
    eta = min(eps, math.sqrt(eps) * math.exp(-h))
    return bool((np.abs(p - eta) < 1e-5 * eta + resolution).any())


def _smallest_subnormal(dtype: torch.dtype) -> float:
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps


def _near_top_n_sigma(z, n):
    finite = np.isfinite(z)
    sigma = z[finite].std()
    threshold = z[finite].max() - n * sigma
    return bool((finite & (np.abs(z - threshold) < 1e-6 * (1 + np.abs(z)))).any())


TRUNCATIONS = {
    "top_k": (TopK, st.integers(0, 8), None),
    "top_p": (TopP, st.floats(0.0, 1.0), _near_top_p),
    "min_p": (MinP, st.floats(0.0, 1.0), _near_min_p),
    "epsilon": (EpsilonCutoff, st.floats(0.0, 0.99), _near_epsilon),
    "eta": (EtaCutoff, st.floats(0.0, 0.99), _near_eta),
    "top_n_sigma": (TopNSigma, st.floats(0.0, 5.0), _near_top_n_sigma),
    "top_h_paper": (lambda a, **kw: TopH(a, rule="paper", **kw), st.floats(0.01, 1.0), _near_top_h_paper),
    "top_h_hf": (lambda a, **kw: TopH(a, rule="hf", **kw), st.floats(0.01, 1.0), _near_top_h_hf),
}


@pytest.mark.parametrize("name", sorted(TRUNCATIONS))
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_truncation_kernel_equals_reference(name, dtype, data):
    make, values, near = TRUNCATIONS[name]
    scores = data.draw(logit_rows(max_vocab=64)).clamp(min=-6e4, max=6e4).to(dtype)
    value = data.draw(values)
    keep = data.draw(st.integers(1, 3))
    processor = make(value, min_tokens_to_keep=keep)
    with use_kernels(False):
        reference = processor(None, scores)
    fused = processor(None, scores)
    assert fused.dtype == dtype
    same = torch.equal(torch.isfinite(fused), torch.isfinite(reference))
    rows = scores.float().double().numpy()
    # rarity is asked of the rounding cases of a precise reference: the hf rule's float32 one rounds H by
    # more than its tie cases lie apart once logits reach the thousands (_hf_normalisation_error)
    if not (name == "top_h_hf" and max(_hf_normalisation_error(r) for r in rows) > 1e-3):
        _tally(name, not same)
    if name in ("epsilon", "eta"):  # their probabilities are held in the row's dtype
        near = functools.partial(near, resolution=_smallest_subnormal(dtype))
    if not same:  # only a rounding case at the rule's boundary may differ, and rarely (counted)
        assert near is not None and any(near(row, value) for row in rows if value > 0), \
            f"{name}={value}, min_tokens_to_keep={keep}"
    kept = torch.isfinite(fused)
    assert torch.equal(fused[kept], scores[kept]), "a kept logit changed"


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(scores=logit_rows(), t=st.sampled_from([0.0, 1e-3, 0.3, 0.7, 1.0, 1.5, 3.0, 40.0]))
def test_temperature_kernel_equals_reference(dtype, scores, t):
    scores = scores.clamp(min=-6e4, max=6e4).to(dtype)
    with use_kernels(False):
        reference = Temperature(t)(None, scores)
    fused = Temperature(t)(None, scores)
    assert torch.equal(torch.isfinite(fused), torch.isfinite(reference))
    kept = torch.isfinite(fused)
    tolerance = 3e-7 if dtype == torch.float32 else 1e-2
    # the same distribution (a shifted row is the same one) and, mostly, the same values
    shift = lambda x: (x.double() - x.double().amax(-1, keepdim=True))[kept]  # noqa: E731
    assert torch.allclose(shift(fused), shift(reference), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kind", ["dynatemp", "edt", "hapo"])
@SETTINGS
@given(scores=logit_rows(), t0=st.floats(0.0, 3.0))
def test_entropy_temperature_kernel_equals_reference(kind, scores, t0):
    args = dict(kind=kind, temperature=t0, dynatemp_range=0.5, theta=0.3)
    reference_processor = EntropyTemperature(**args)
    fused_processor = EntropyTemperature(**args)
    for step in range(3):  # HAPO's windows fill over the steps
        ids = torch.zeros(scores.shape[0], 5 + step, dtype=torch.long)
        with use_kernels(False):
            reference = reference_processor(ids, scores)
        fused = fused_processor(ids, scores)
        # the kernel's entropy (ln G + Q/G over the row) is exact to ~1e-15 nats, not relative to a tiny
        # entropy: a near-certain row's temperature may differ more than rounding
        certain = bool((entropy(scores) < 1e-6).any())
        rtol = 1e-3 if certain else 1e-6
        assert torch.allclose(fused_processor.last_temperature, reference_processor.last_temperature, rtol=rtol)
        assert torch.equal(torch.isfinite(fused), torch.isfinite(reference))
        kept = torch.isfinite(fused)
        if certain:  # each row's logits times its own temperature: T itself may differ by more than 1e-3 there
            unscaled = lambda x, p: (x.double() * p.last_temperature.double().view(-1, 1))[kept]  # noqa: E731
            assert torch.allclose(unscaled(fused, fused_processor), unscaled(reference, reference_processor),
                                  rtol=1e-5, atol=1e-5)
        else:
            assert torch.allclose(fused[kept], reference[kept], rtol=1e-5, atol=1e-5)
        scores = scores.roll(1, dims=-1)


CHAINS = {
    "T=2, top-k 5": lambda: [Temperature(2.0), TopK(5)],
    "T=0.5, Top-H 0.6": lambda: [Temperature(0.5), TopH(0.6)],
    "Top-H hf 0.4": lambda: [TopH(0.4, rule="hf")],
    "top-k 8, top-p 0.9, min-p 0.05, T=0.8": lambda: [TopK(8), TopP(0.9), MinP(0.05), Temperature(0.8)],
    "EDT, Top-H 0.5": lambda: [EntropyTemperature("edt", temperature=1.2, theta=0.2), TopH(0.5)],
    # the entropy's scan takes sums alone (no pivots, no token list): the search after it starts afresh
    "dynatemp, top-p 0.8": lambda: [EntropyTemperature("dynatemp", temperature=1.3, dynatemp_range=0.5), TopP(0.8)],
    "T=0 then top-p": lambda: [Temperature(0.0), TopP(0.5)],
    "eta, top-n-sigma": lambda: [EtaCutoff(0.02), TopNSigma(1.0)],
    # T = 1 keeps the telemetry's scan; Top-H 1.0 keeps everything, so top-p searches with Top-H's pivots
    "T=1, Top-H 1.0, T=1, top-p 0.7": lambda: [Temperature(1.0), TopH(1.0), Temperature(1.0), TopP(0.7)],
    # every finite token kept: the draw's own pass over the row (float32 sums, the race screened by them)
    "T=1.3": lambda: [Temperature(1.3)],
    "dynatemp": lambda: [EntropyTemperature("dynatemp", temperature=1.3, dynatemp_range=0.5)],
}


@pytest.mark.parametrize("name", sorted(CHAINS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores=logit_rows(max_vocab=200), seed=st.integers(0, 2**40), step=st.integers(0, 1000))
def test_fused_draw_and_telemetry_equal_the_reference_on_the_same_logits(name, scores, seed, step):
    chain = SamplerChain(CHAINS[name]())
    processed = chain(None, scores)  # the fused kernel's processed logits
    seeds = torch.arange(scores.shape[0]) + seed
    drawn = chain.sample(None, scores, seeds=seeds, steps=step)
    assert_race_winners(drawn.tokens, processed, seeds, step)
    reference = measure_step(scores, processed, drawn.tokens, chain.applied_temperature(scores.shape[0]))
    t = drawn.telemetry
    assert torch.equal(t.kept, reference.kept)
    for field in ("entropy_before", "logprob_before", "temperature"):
        assert torch.allclose(getattr(t, field), getattr(reference, field), rtol=1e-4, atol=1e-4), field
    # the reference measures the processed logits after their rounding to float32, the kernel before it:
    # logits of 10^4 (hypothesis draws them) are rounded by up to 10^-3
    finite = torch.where(torch.isfinite(processed), processed.abs(), 0.0).amax(-1)
    rounding = 4 * torch.finfo(torch.float32).eps * finite
    for field in ("entropy_after", "logprob_after"):
        ours, theirs = getattr(t, field).double(), getattr(reference, field).double()
        assert ((ours == theirs) | ((ours - theirs).abs() <= 1e-4 + 1e-4 * theirs.abs() + rounding)).all(), field


def assert_race_winners(tokens: torch.Tensor, processed: torch.Tensor, seeds: torch.Tensor, step: int) -> None:
    """``tokens`` are the reference race's winners over ``processed``, except where two scores tie to
    within rounding (there either may win): the reference's scores start from ``processed`` in its dtype,
    the kernel's from ``s·(m − z)`` in float64, so two scores closer than the dtype's rounding of the
    processed logits (half an ulp each: 2^-11 relative in float16) may come out in either order."""
    expected = race_draw(processed, seeds, step)
    keys = step_keys(seeds, torch.full_like(seeds, step))
    ids = torch.arange(processed.shape[1]).expand_as(processed)
    race = torch.where(torch.isfinite(processed), processed.double() - torch.log(-torch.log(
        token_uniforms(keys[:, None].expand_as(processed), ids))), -torch.inf)
    top2 = race.topk(min(2, processed.shape[1]), dim=-1).values
    finite = torch.where(torch.isfinite(processed), processed.double().abs(), 0.0).amax(-1)
    rounding = torch.finfo(processed.dtype).eps * (1 + finite)
    tight = (top2[:, 0] - top2[:, -1]).abs() < torch.maximum(1e-9 * (1 + top2[:, 0].abs()), rounding)
    if processed.shape[1] == 1:
        tight[:] = False
    assert torch.equal(tokens[~tight], expected[~tight])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores=logit_rows(max_vocab=300), dtype=st.sampled_from([torch.float64, torch.float16, torch.bfloat16]),
       t=st.sampled_from([0.05, 0.7, 1.0, 2.5]), seed=st.integers(0, 2**40), step=st.integers(0, 1000))
def test_a_draw_that_keeps_every_token_equals_the_reference_in_any_dtype(scores, dtype, t, seed, step):
    # the draw's own pass over the row reads it in its dtype, with float32 exponentials screening the race
    scores = scores.to(dtype)
    chain = SamplerChain([Temperature(t)])
    seeds = torch.arange(scores.shape[0]) + seed
    drawn = chain.sample(None, scores, seeds=seeds, steps=step)
    assert_race_winners(drawn.tokens, chain(None, scores), seeds, step)
    assert torch.equal(drawn.telemetry.kept, torch.isfinite(scores).sum(-1))


def test_kernels_are_used_and_can_be_switched_off():
    scores = torch.randn(2, 10)
    assert backend_for(scores) == "cpu"
    assert backend_for(scores.long()) is None and backend_for(torch.randn(10)) is None
    chain = SamplerChain([Temperature(1.5), TopH(0.4)])
    with use_kernels(False):
        assert chain.sample(None, scores, seeds=0).telemetry.kept.dtype == torch.int64  # the torch path runs
    with use_kernels(True):
        # Typical has no kernel: the chain falls back to processor-by-processor, the others fused
        mixed = SamplerChain([Temperature(1.5), Typical(0.9)])
        assert torch.equal(mixed(None, scores), Typical(0.9)(None, Temperature(1.5)(None, scores)))


def test_all_masked_row_is_reported_not_drawn():
    scores = torch.full((2, 6), -torch.inf)
    scores[0, 3] = 1.0
    drawn = SamplerChain([TopP(0.9)]).sample(None, scores, seeds=[0, 1])
    assert int(drawn.tokens[0]) == 3
    # nothing can be drawn from row 1: token 0, kept 0, log-probability -inf, as in the torch reference
    assert int(drawn.tokens[1]) == 0 and int(drawn.telemetry.kept[1]) == 0
    assert float(drawn.telemetry.logprob_after[1]) == -math.inf
    with use_kernels(False):
        reference = SamplerChain([TopP(0.9)]).sample(None, scores, seeds=[0, 1])
    assert drawn.tokens.tolist() == reference.tokens.tolist()
    assert drawn.telemetry.kept.tolist() == reference.telemetry.kept.tolist()
    assert drawn.telemetry.logprob_after.tolist() == reference.telemetry.logprob_after.tolist()


def test_a_changed_parameter_takes_effect_at_the_next_step():
    """The fused path builds a program of plain numbers once and looks it up afterwards: a parameter
    changed between steps must run with its new value, as in the torch reference."""
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    temperature = Temperature(1.0)
    chain = SamplerChain([temperature, MinP(0.3)])
    assert chain.sample(None, scores, seeds=0).telemetry.kept.tolist() == [2]  # z >= 3 + ln 0.3
    temperature.temperature = 4.0
    drawn = chain.sample(None, scores, seeds=0)
    assert temperature.last_temperature.dtype == torch.float32 and temperature.last_temperature.tolist() == [4.0]
    with use_kernels(False):
        reference = chain.sample(None, scores, seeds=0)
    assert drawn.telemetry.kept.tolist() == reference.telemetry.kept.tolist() == [4]
    assert drawn.tokens.tolist() == reference.tokens.tolist()


def test_tie_groups_larger_than_the_sort_window():
    """A row with thousands of tokens tied at the boundary goes through the tie path: the lowest ids
    of the tie survive, as in the reference."""
    scores = torch.zeros(1, 5000)
    scores[0, :3] = 5.0
    for processor in (TopK(700), TopP(0.5), TopH(0.9), TopH(0.4, rule="hf")):
        with use_kernels(False):
            reference = torch.isfinite(processor(None, scores))
        assert torch.equal(torch.isfinite(processor(None, scores)), reference), processor


LARGE_ROW_CHAINS = {
    "Top-H": lambda: [TopH(0.4)],
    "Top-H hf": lambda: [TopH(0.4, rule="hf")],
    "top-p 0.9": lambda: [Temperature(1.0), TopP(0.9)],
    "top-p, T, Top-H": lambda: [TopP(0.95), Temperature(0.7), TopH(0.5)],
    "min-p, T, top-p": lambda: [MinP(0.02), Temperature(1.5), TopP(0.8)],
    "top-k 3000, top-p": lambda: [TopK(3000), TopP(0.9)],
    "T, min-p, Top-H": lambda: [Temperature(2.0), MinP(0.1), TopH(0.6)],
    "T 1.5, Top-H": lambda: [Temperature(1.5), TopH(0.4)],
    "T 1.5, top-p": lambda: [Temperature(1.5), TopP(0.9)],
    # Top-H keeps everything (α = 1): top-p's and top-k's searches start from its scan, whose pivots and
    # near tier (up to 4 nats) were chosen for Top-H
    "Top-H 1.0, top-p": lambda: [TopH(1.0), TopP(0.9)],
    "Top-H 1.0, top-k 100": lambda: [TopH(1.0), TopK(100)],
    # searches by count scan without exponentials and record the list without them: the passes after
    # them (the hf rule's entropy, a rescaled draw, a draw from the near tier) compute those they read
    "T 1.5, Top-H hf": lambda: [Temperature(1.5), TopH(0.4, rule="hf")],
    "T 1.5, top-k 1000, T 0.8": lambda: [Temperature(1.5), TopK(1000), Temperature(0.8)],
    "top-k 50": lambda: [TopK(50)],
}


@pytest.mark.parametrize("name", sorted(LARGE_ROW_CHAINS))
def test_large_rows_equal_the_reference(name):
    """Rows of 20,000 tokens, flat (a Gaussian bulk, as in bench/kernels.py) and sharp, take the
    paths small vocabularies never reach: searches narrowed over several rounds, the CPU's near tier of
    the token list (and, on the flattest rows, its top lowered by a pivot, before the scan or once it
    outgrows NEAR_CAP), the whole list rebuilt when a search goes past it, and a temperature between two
    rules (the list rescaled). Kept sets and drawn tokens equal the reference's."""
    g = torch.Generator().manual_seed(7)
    flat = torch.randn(4, 20000, generator=g) * 2.5
    flat[:, :8] += torch.rand(4, 8, generator=g) * 8
    sharp = torch.randn(4, 20000, generator=g) * 4.0
    flattest = torch.randn(2, 20000, generator=g)
    flattest[1, ::64] -= 30.0  # where near_crowded's sample looks: only the tier's overflow lowers it
    scores = torch.cat([flat, sharp, flattest])
    seeds = torch.arange(scores.shape[0])
    chain = SamplerChain(LARGE_ROW_CHAINS[name]())
    with use_kernels(False):
        reference = chain(None, scores)
    fused = chain(None, scores)
    assert torch.equal(torch.isfinite(fused), torch.isfinite(reference))
    if name in ("top-p 0.9", "top-k 3000, top-p"):  # narrowed past the sort window, over the whole list
        assert int(torch.isfinite(fused).sum(-1).max()) > 512
    drawn = chain.sample(None, scores, seeds=seeds, steps=3)  # with telemetry: the raw row's sums come first
    assert torch.equal(drawn.tokens, race_draw(reference, seeds, 3))
    assert torch.equal(drawn.telemetry.kept, torch.isfinite(reference).sum(-1))
    # the raw row's entropy and log-probability (float32 exponentials when the chain starts with T != 1)
    measured = measure_step(scores.double(), reference.double(), drawn.tokens,
                            chain.applied_temperature(scores.shape[0]))
    assert torch.allclose(drawn.telemetry.entropy_before.double(), measured.entropy_before, rtol=1e-6)
    assert torch.allclose(drawn.telemetry.logprob_before.double(), measured.logprob_before, rtol=1e-6, atol=1e-6)


def _prefix_entropies(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Entropies of the renormalised prefixes of softmax(z) in descending order, and of the whole."""
    p = np.exp(z - z.max())
    p = np.sort(p / p.sum())[::-1]
    gamma = np.cumsum(p)
    plogp = np.cumsum(p * np.log(p))
    return np.log(gamma) - plogp / gamma, float(-(p * np.log(p)).sum())


def _boundary_rows(shape: str, seed: int) -> torch.Tensor:
    """Three rows of 20,000 tokens: a language model's (a few strong candidates over a wide bulk), or so
    flat that the CPU's near tier is lowered and targets lie past it."""
    g = torch.Generator().manual_seed(seed)
    if shape == "peaked":
        rows = torch.randn(3, 20000, generator=g) * 2.5
        rows[:, :20] += torch.rand(3, 20, generator=g) * 12
        return rows
    return torch.randn(3, 20000, generator=g)


def _assert_keeps(chain: SamplerChain, row: torch.Tensor, expected: set[int], case) -> None:
    """The chain keeps exactly ``expected`` of ``row``, processing it and drawing from it."""
    kept = torch.isfinite(chain(None, row[None]))[0]
    assert set(torch.nonzero(kept).flatten().tolist()) == expected, case
    assert int(chain.sample(None, row[None], seeds=0).telemetry.kept[0]) == len(expected), case


@pytest.mark.parametrize("shape", ["peaked", "flat"])
def test_top_h_from_a_rough_scan_is_exact_at_its_bound(shape):
    """The paper's Top-H on a row nothing has cut searches from float32 sums (H within ~1e-5) and then
    certifies its target on exact prefix entropies, searching again in float64 when they lie within that
    error of the bound. Bounds placed 3e-9 to 1e-7 (relative) on either side of a prefix's entropy, where
    the float32 sums alone (measured: off by 1e-9 to 7e-8) would sometimes decide wrongly, but far beyond
    float64's rounding, must give the float64 answer: the kept set of a plain float64 walk."""
    rows = _boundary_rows(shape, 11)
    t = 1.5
    checked = 0
    for row in rows:
        z = row.double().numpy() / t
        entropies, whole = _prefix_entropies(z)
        for k in (2, 5, 20, 100, 1000, 4000, 19000, 19900):
            for delta in (-1e-7, -1e-8, -3e-9, 3e-9, 1e-8, 1e-7):
                alpha = entropies[k - 1] / whole * (1 + delta)
                allowed, near = paper_algorithm_1(z, alpha)
                assert not near
                _assert_keeps(SamplerChain([Temperature(t), TopH(alpha)]), row, allowed[0], (k, delta))
                checked += 1
    assert checked == 3 * 8 * 6


def _top_p_expected(z: np.ndarray, p: float) -> set[int]:
    """Top-p by a float64 walk: the smallest prefix (descending, ties by lower id) whose mass reaches p."""
    order = _descending(z)
    cumulative = np.cumsum(_probs(z)[order])
    return set(order[: int(np.searchsorted(cumulative, p)) + 1].tolist())


@pytest.mark.parametrize("shape", ["peaked", "flat"])
def test_top_p_from_a_rough_histogram_is_exact_at_its_bound(shape):
    """Top-p on a row nothing has cut bins the row's float32 masses, takes float64 sums up to the bin
    where the mass crosses p, and certifies its target against the bound of the tail's float32 error;
    where that bound leaves it open, against an exact float64 G; and leaves to the exact search what
    lies within float64's rounding (row_program.top_p_rough). p halfway between two prefixes' masses
    must be certified by the histogram alone; p placed 3e-9 to 1e-7 (relative) on either side of a
    prefix's mass, where the float32 masses alone (off by up to ~2e-7) would sometimes decide wrongly,
    must mostly be certified once G is exact (not when the walk's target lies just past the histogram's
    bin: measured 112 and 122 of 144; 18 and 8 on the float32 bound alone), always with the float64
    walk's answer; p within 1e-13 of it must never be certified, and the chains must keep the float64
    walk's set in every case."""
    from entrodec.kernels import cpu
    from entrodec.kernels.launch import _cpu_buffers

    compiled = cpu.COMPILED
    rows = _boundary_rows(shape, 12)
    t = 1.5
    rows_f, rows_i = _cpu_buffers(1, rows.shape[1])
    ws = compiled["thread_ws"](0, rows.shape[1], compiled["small_arrays"](1), rows_f, rows_i)
    top_p_rough = compiled["top_p_rough"]
    outcomes = {"histogram": 0, "certified": 0, "search": 0, "within rounding": 0}
    for row in rows:
        z = row.double().numpy() / t
        cumulative = np.cumsum(_probs(z)[_descending(z)])
        m, _, z_min = compiled["row_max"](row.numpy(), ws)
        d = m - row.double().numpy()

        def certified_keeps(p: float):
            sure, dt, ilo, ihi, _, _ = top_p_rough(row.numpy(), m, z_min, 1 / t, p, 1.0, False, False, ws)
            kept = (d < dt) | ((d == dt) & (np.arange(d.size) >= ilo) & (np.arange(d.size) <= ihi))
            return sure, set(np.flatnonzero(kept).tolist())

        for k in (1, 2, 5, 20, 100, 1000, 4000, 19000):
            halfway = (cumulative[k - 1] + (cumulative[k - 2] if k > 1 else 0.0)) / 2
            ws[0][:] = np.nan  # where a second stage's whole-row sums would land
            sure, kept = certified_keeps(halfway)
            assert sure and kept == _top_p_expected(z, halfway) and len(kept) == k, k
            assert np.isnan(ws[0]).all(), k  # the histogram alone decided
            outcomes["histogram"] += 1
            for delta in (-1e-7, -1e-8, -3e-9, -1e-13, 1e-13, 3e-9, 1e-8, 1e-7):
                p = cumulative[k - 1] * (1 + delta)
                expected = _top_p_expected(z, p)
                sure, kept = certified_keeps(p)
                assert kept == expected or not sure, (k, delta)
                outcomes["within rounding" if abs(delta) < 1e-12 else "certified" if sure else "search"] += 1
                assert not (sure and abs(delta) < 1e-12), (k, delta)
                _assert_keeps(SamplerChain([Temperature(t), TopP(p)]), row, expected, (k, delta))
    assert outcomes["histogram"] == 3 * 8 and outcomes["within rounding"] == 3 * 8 * 2
    assert outcomes["certified"] >= 0.75 * 3 * 8 * 6, outcomes


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 600), st.sampled_from([1e-3, 0.05, 0.5, 4.0, 40.0]), st.floats(0.05, 0.999),
       st.integers(0, 2**32 - 1))
def test_top_p_walks_its_histogram_only_to_the_rows_highest_bin(n, width, p, seed):
    """row_bins_rough sums and walks its histogram only up to the highest bin a token fell in (a row
    spans a few hundred of the 4,096). Rows spanning 1 to ~1,300 bins, with p up to 0.999, put the target in
    or just before that bin: a certified kept set is the float64 walk's, the chain keeps it, and the
    histogram above the highest bin is empty."""
    from entrodec.kernels import cpu
    from entrodec.kernels.launch import _cpu_buffers

    rng = np.random.default_rng(seed)
    row = torch.from_numpy((rng.random(n) * width).astype(np.float32))
    z = row.double().numpy()
    compiled = cpu.COMPILED
    rows_f, rows_i = _cpu_buffers(1, n)
    ws = compiled["thread_ws"](0, n, compiled["small_arrays"](1), rows_f, rows_i)
    m, _, z_min = compiled["row_max"](row.numpy(), ws)
    expected = _top_p_expected(z, p)
    sure, dt, ilo, ihi, _, _ = compiled["top_p_rough"](row.numpy(), m, z_min, 1.0, p, 1.0, False, False, ws)
    d = m - z
    kept = (d < dt) | ((d == dt) & (np.arange(n) >= ilo) & (np.arange(n) <= ihi))
    assert not sure or set(np.flatnonzero(kept).tolist()) == expected
    highest = int(np.minimum((np.float32(m) - row.numpy()) * np.float32(32), cpu.LAST_BIN).max())
    assert not ws[cpu.BIN_SUMS][highest + 1:].any()
    _assert_keeps(SamplerChain([TopP(p)]), row, expected, (n, width, p))


def test_the_float32_exponential_is_within_its_documented_error():
    """cpu.exp_neg_f32 (Estrin's form, for latency) stays within 1.1e-7 of float64's e^-x on a dense
    float32 grid of [0, 87] and at the ends of its range reduction's intervals (x = k·ln 2 ± ln 2 / 2):
    the error that ROUGH_EPS_TOKEN's 3e-7 covers with the sums' rounding."""
    from entrodec.kernels import cpu

    steps = np.arange(126) * math.log(2)
    x = np.concatenate([np.linspace(0.0, 87.0, 400_001), steps, steps + math.log(2) / 2, steps - math.log(2) / 2])
    x = x[(x >= 0) & (x <= 87)].astype(np.float32)

    @numba.njit
    def each(f, xs, out):
        for i in range(xs.shape[0]):
            out[i] = f(xs[i])

    rough = np.empty_like(x)
    each(cpu.COMPILED["exp_neg_f32"], x, rough)
    assert np.max(np.abs(rough / np.exp(-x.astype(np.float64)) - 1)) < 1.1e-7


@settings(max_examples=60, deadline=None)
@given(st.floats(0.05, 20.0), st.floats(-1e4, 1e4), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**32 - 1))
def test_a_float32_exponential_stays_within_the_bound_certificates_assume(t, top, dtype, seed):
    """A token's float32 e^-x (cpu.rough_token: x = s·(m − z) rounded to float32, then a float32
    polynomial) lies within ROUGH_EPS_TOKEN + ROUGH_EPS_X·x (relative) of the float64 e^{-s·d}, for
    gaps out to 80 nats, at any temperature and logit scale: top_h_rough's certificate rests on it."""
    from entrodec.kernels import cpu
    from entrodec.kernels.row_program import ROUGH_EPS_TOKEN, ROUGH_EPS_X

    z = (top - np.random.default_rng(seed).random(4096) * 80 * t).astype(dtype)
    z[0] = dtype(top)
    m = float(z[0])
    s = 1.0 / t
    exact = np.exp(-s * (m - z.astype(np.float64)))
    token = cpu.COMPILED["rough_token"]
    rough = np.array([token(z.dtype.type(m) - v, z.dtype.type(s))[3] for v in z], dtype=np.float64)
    x = s * (m - z.astype(np.float64))
    assert (np.abs(rough / exact - 1) <= ROUGH_EPS_TOKEN + ROUGH_EPS_X * x).all()


@settings(max_examples=60, deadline=None)
@given(st.floats(0.05, 20.0), st.floats(-1e4, 1e4), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**32 - 1))
def test_a_rough_histogram_bin_stays_within_the_bound_top_p_assumes(t, top, dtype, seed):
    """Each bin of row_bins_rough's histogram (its bin's weight e^{-k/32} times a float32 cubic in the
    token's offset, summed in float64) lies within ROUGH_EPS_TOKEN + ROUGH_EPS_X·x of the float64 mass of
    its tokens, x the bin's top: top_p_rough bounds the tail's error with it. The tokens fall in the bins
    that ⌊32·x⌋ of their float32 x names."""
    from entrodec.kernels import cpu
    from entrodec.kernels.launch import _cpu_buffers
    from entrodec.kernels.row_program import ROUGH_EPS_TOKEN, ROUGH_EPS_X

    z = (top - np.random.default_rng(seed).random(4096) * 100 * t).astype(dtype)
    z[0] = dtype(top)
    compiled = cpu.COMPILED
    rows_f, rows_i = _cpu_buffers(1, z.shape[0])
    ws = compiled["thread_ws"](0, z.shape[0], compiled["small_arrays"](1), rows_f, rows_i)
    m, _, z_min = compiled["row_max"](z, ws)
    s = 1.0 / t
    compiled["row_bins_rough"](z, m, z_min, s, 0.5, False, False, ws)
    binned = ws[cpu.BIN_SUMS]
    x32 = (z.dtype.type(s) * (z.dtype.type(m) - z)).astype(np.float32) * np.float32(32)
    k = np.minimum(x32, cpu.LAST_BIN).astype(np.int64)
    mass = np.exp(-s * (m - z.astype(np.float64)))
    exact = np.bincount(k, weights=mass, minlength=cpu.BINS)
    bound = np.bincount(k, weights=mass * (ROUGH_EPS_TOKEN + ROUGH_EPS_X * (k + 1) / 32), minlength=cpu.BINS)
    assert (np.abs(binned - exact)[:-1] <= bound[:-1] + 1e-300).all()
    assert binned[-1] == 0.0 and (exact[-1] <= 2e-38 * z.size)  # the last bin's tokens: past 128 nats


def _abs_bins(z: np.ndarray, s: float) -> np.ndarray:
    """cpu.abs_bin in NumPy: ⌈32·s·z⌉ of the float32 product, computed in the row's dtype."""
    c = z.dtype.type(s) * z.dtype.type(32.0)
    return np.ceil((c * z).astype(np.float32)).astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.05, 20.0), st.floats(-1e4, 1e4), st.sampled_from([20.0, 100.0, 126.0, 130.0, 400.0]),
       st.sampled_from([np.float32, np.float64]), st.sampled_from([None, math.inf, -math.inf]),
       st.integers(0, 2**32 - 1))
def test_the_max_pass_histogram_gives_row_max_and_bins_within_the_bound(t, top, width, dtype, special, seed):
    """row_max_bins, which takes top-p's histogram in the read that finds the maximum, returns row_max's
    maximum, count and lowest logit; its histogram (absolute bins ⌈32·s·z⌉ mod 4096, each bin's mass
    relative to e^{k/32}) lies within ROUGH_EPS_TOKEN + ROUGH_EPS_X·|s·z| of the float64 masses, which
    row_bins_rough's bound on the tail assumes. A row with an infinite logit, or wider than 4,094 bins
    (~128 nats), is refused (``binned`` false) rather than binned with aliases. The raw sums (G and Q at
    T = 1, for the telemetry), taken relative to the largest logit so far and rescaled as it grows, are
    the float64 sums to float32's precision."""
    from entrodec.kernels import cpu
    from entrodec.kernels.launch import _cpu_buffers
    from entrodec.kernels.row_program import ROUGH_EPS_TOKEN, ROUGH_EPS_X

    rng = np.random.default_rng(seed)
    z = (top - rng.random(4096) * width * t).astype(dtype)
    z[rng.integers(0, 4096)] = dtype(top)  # the raw sums' reference grows wherever the maximum lies
    z[rng.integers(0, 4096)] = dtype(top - width * t)
    if special is not None:
        z[rng.integers(0, z.size)] = special
    compiled = cpu.COMPILED
    rows_f, rows_i = _cpu_buffers(1, z.shape[0])
    ws = compiled["thread_ws"](0, z.shape[0], compiled["small_arrays"](1), rows_f, rows_i)
    expected = compiled["row_max"](z, ws)
    s = 1.0 / t
    m, n, z_min, binned, g_raw, q_raw = compiled["row_max_bins"](z, s, True, ws)
    assert (m, n, z_min) == expected
    if special is not None:
        assert not binned and (g_raw, q_raw) == compiled["row_raw_sums"](z, m, ws)
        return
    d = m - z.astype(np.float64)
    assert g_raw == pytest.approx(np.exp(-d).sum(), rel=1e-5)
    assert q_raw == pytest.approx((d * np.exp(-d)).sum(), rel=1e-5, abs=1e-12)
    assert compiled["row_max_bins"](z, s, False, ws)[3] == binned
    k = _abs_bins(z, s)
    assert binned == (k.max() - k.min() <= cpu.BINS - 2)
    if not binned:
        return
    sz = s * z.astype(np.float64)
    relative = np.exp(sz - k / 32.0)
    exact = np.bincount(k % cpu.BINS, weights=relative, minlength=cpu.BINS)
    bound = np.bincount(k % cpu.BINS, weights=relative * (ROUGH_EPS_TOKEN + ROUGH_EPS_X * np.abs(sz)),
                        minlength=cpu.BINS)
    assert (np.abs(ws[cpu.BIN_SUMS] - exact) <= bound + 1e-300).all()


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 600), st.sampled_from([1e-3, 0.05, 0.5, 4.0, 40.0, 150.0]), st.floats(-50.0, 50.0),
       st.floats(0.05, 0.999), st.sampled_from([0.5, 1.0, 1.5]), st.integers(0, 2**32 - 1))
def test_top_p_from_the_max_pass_histogram_keeps_the_float64_walks_set(n, width, offset, p, t, seed):
    """Top-p from row_max_bins' histogram (absolute bins, the maximum not known while binning; logits
    of either sign): a certified kept set is the float64 walk's, and the chain, which takes this path when
    it opens with temperature and top-p, keeps that set whether it processes the row or draws from it."""
    from entrodec.kernels import cpu
    from entrodec.kernels.launch import _cpu_buffers

    rng = np.random.default_rng(seed)
    row = torch.from_numpy((offset + rng.random(n) * width).astype(np.float32))
    z = row.double().numpy()
    compiled = cpu.COMPILED
    rows_f, rows_i = _cpu_buffers(1, n)
    ws = compiled["thread_ws"](0, n, compiled["small_arrays"](1), rows_f, rows_i)
    s = float(np.float32(1.0) / np.float32(t))
    m, _, z_min, binned, _, _ = compiled["row_max_bins"](row.numpy(), s, False, ws)
    expected = _top_p_expected(z * s, p)
    sure, dt, ilo, ihi, _, _ = compiled["top_p_rough"](row.numpy(), m, z_min, s, p, 1.0, False, binned, ws)
    d = m - z
    kept = (d < dt) | ((d == dt) & (np.arange(n) >= ilo) & (np.arange(n) <= ihi))
    assert not sure or set(np.flatnonzero(kept).tolist()) == expected
    assert binned or width * s > 127
    with_temperature = _top_p_expected(z / np.float32(t), p)
    _assert_keeps(SamplerChain([Temperature(t), TopP(p)]), row, with_temperature, (n, width, p, t))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 700), st.sampled_from([0.0, 0.01, 0.11, 0.5, 0.95, 1.0]), st.integers(0, 3),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_appending_a_rows_tokens_within_bounds_lists_exactly_them_in_id_order(vocab, share, before, dtype, seed):
    """cpu.append_within lists every token with lo <= z <= top, gap and id, after the list's first
    entries and in id order, whatever their share of the row, in a list no longer than the row."""
    from entrodec.kernels import cpu

    rng = np.random.default_rng(seed)
    z = rng.normal(size=vocab).astype(dtype)
    m = float(z.max())
    lo = np.quantile(z, 1.0 - share) if share > 0 else np.inf
    lo = z.dtype.type(lo) if share < 1.0 else z.min()
    inside = np.flatnonzero((z >= lo) & (z <= z.dtype.type(m)))
    before = min(before, vocab - inside.size)
    gaps = np.full(vocab, np.nan)
    ids = np.full(vocab, -1, dtype=np.int64)
    n = cpu.COMPILED["append_within"](z, m, 0, vocab, lo, z.dtype.type(m), gaps, ids, before)
    assert n == before + inside.size
    assert (ids[before:n] == inside).all()
    assert (gaps[before:n] == m - z[inside].astype(np.float64)).all()
    assert np.isnan(gaps[:before]).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 700), st.sampled_from([0.01, 0.11, 0.5, 1.0]), st.sampled_from([0.0, 0.3, 1.0]),
       st.booleans(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_top_ps_list_and_its_lowest_bin_are_split_off_in_one_read(vocab, share, low_share, infinite, dtype, seed):
    """cpu.append_split, top-p's listing: every token with lo <= z <= top in id order, as append_within,
    and the entries with a gap above m - hi copied apart, also in id order, on rows with and without
    infinite logits (without them it tests each token against lo alone)."""
    from entrodec.kernels import cpu

    rng = np.random.default_rng(seed)
    z = np.round(rng.normal(size=vocab) * 4) / 4  # ties
    if infinite:
        z[rng.integers(0, vocab, 3)] = -np.inf
        z[rng.integers(0, vocab)] = np.inf
    z = z.astype(dtype)
    finite_z = z[np.isfinite(z)]
    if finite_z.size == 0:
        return
    top = z.dtype.type(finite_z.max())
    m = float(top)
    lo = z.dtype.type(np.quantile(finite_z, 1.0 - share))
    hi = z.dtype.type(np.quantile(finite_z, 1.0 - share * low_share))
    inside = np.flatnonzero((z >= lo) & (z <= top))
    gaps = np.full(vocab, np.nan)
    ids = np.full(vocab, -1, dtype=np.int64)
    low_gaps = np.full(vocab, np.nan)
    low_ids = np.full(vocab, -1, dtype=np.int64)
    n, n_low = cpu.COMPILED["append_split"](z, m, lo, hi, top, not infinite, gaps, ids, low_gaps, low_ids)
    assert n == inside.size
    assert (ids[:n] == inside).all() and (gaps[:n] == m - z[inside].astype(np.float64)).all()
    low = gaps[:n] > m - np.float64(hi)
    assert n_low == low.sum()
    assert (low_ids[:n_low] == inside[low]).all() and (low_gaps[:n_low] == gaps[:n][low]).all()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 900), st.sampled_from(["spread", "ties", "one value", "subnormal width", "wide"]),
       st.integers(0, 2**32 - 1))
def test_sorting_a_bins_tokens_by_gap_is_a_stable_sort(n, kind, seed):
    """cpu.sort_by_gap (top-p's walk through its target bin needs the bin's tokens by gap, ties by id)
    gives exactly NumPy's stable argsort order, whatever the spread of the gaps."""
    from entrodec.kernels import cpu

    rng = np.random.default_rng(seed)
    gaps = {"spread": lambda: rng.random(n) * 0.03 + 2.0, "ties": lambda: rng.integers(0, 4, n) * 0.01,
            "one value": lambda: np.full(n, 1.5), "subnormal width": lambda: 1e-310 + rng.integers(0, 2, n) * 5e-324,
            "wide": lambda: np.where(rng.random(n) < 0.5, rng.random(n) * 1e-300, rng.random(n) * 1e300)}[kind]()
    ids = rng.permutation(10 * n + 1)[:n].astype(np.int64)
    out_gaps = np.full(n + 1, np.nan)
    out_ids = np.full(n + 1, -1, dtype=np.int64)
    cpu.COMPILED["sort_by_gap"](gaps, ids, n, out_gaps, out_ids, np.empty(max(n, 2)))
    order = np.argsort(gaps, kind="stable")
    assert (out_gaps[:n] == gaps[order]).all() and (out_ids[:n] == ids[order]).all()
    assert np.isnan(out_gaps[n]) and out_ids[n] == -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_prefetched_next_row_starts_at_its_first_logit_and_a_prefetch_never_faults(dtype):
    """run_chain hands each row the address of the next (cpu.address_of), which the row's first
    compute-bound pass prefetches (a hint: an address outside every mapping must not fault, and the
    kept sets stay the unprefetched ones, which the parity tests check through run_chain)."""
    from entrodec.kernels import cpu

    rows = np.zeros((3, 100), dtype=dtype)

    @numba.njit
    def next_row_address(z):
        cpu.prefetch_at(np.int64(64))  # the first page is never mapped
        return cpu.address_of(z[1])

    assert next_row_address(rows) == rows[1].ctypes.data == rows.ctypes.data + 100 * rows.itemsize


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=300), st.sampled_from([np.float32, np.float64]))
def test_row_extremes_come_from_order_keys_exactly(values, dtype):
    """The row's maximum and minimum are taken over integer keys of the floats' bits (a vectorised
    integer max and min): they equal NumPy's for any finite or infinite values (a signed zero as a value:
    which zero NumPy returns is its comparison order's), in float32 and float64 rows."""
    from entrodec.kernels import cpu

    z = np.array(values, dtype=dtype)
    top, lowest = cpu.COMPILED["plain_extremes"](z)
    assert top == z.max() and lowest == z.min()


def _ws(vocab: int):
    from entrodec.kernels import cpu
    from entrodec.kernels.launch import _cpu_buffers

    rows_f, rows_i = _cpu_buffers(1, vocab)
    return cpu.COMPILED["thread_ws"](0, vocab, cpu.COMPILED["small_arrays"](1), rows_f, rows_i)


@pytest.mark.parametrize("row", ["flat", "gaps on the pivots", "three tokens"])
def test_a_count_scan_counts_exactly_from_logit_floors(row):
    """A count scan of a row with no infinite logit compares the raw logits against each pivot's lowest
    logit (found by bisection over the dtype) instead of computing gaps: its counts equal a float64
    count of ``d <= pivot``, tokens lying exactly on a pivot included, and its near tier holds exactly
    the tokens up to its top, in id order."""
    from entrodec.kernels import cpu
    from entrodec.kernels.row_program import A_DMAX, A_N, A_PIV, NEAR_NATS

    compiled = cpu.COMPILED
    z = (torch.randn(20000, generator=torch.Generator().manual_seed(5)) * 2.5).numpy()
    if row == "three tokens":  # fewer tokens than pivots
        z = np.array([0.5, -1.0, 3.0], dtype=np.float32)
    if row == "gaps on the pivots":
        z[: 8 * 100] = np.repeat(np.float32(z.max()) - np.array([0.0, 1.0, 4.0, 8.0, 16.0, 1.0 + 2**-20, 8.0 - 2**-20, 3.5],
                                                             dtype=np.float32), 100)
    ws = _ws(z.shape[0])
    m, _, _ = compiled["row_max"](z, ws)
    compiled["first_pivots"](ws[1], 1.0, NEAR_NATS)
    compiled["row_scan"](z, m, 1.0, math.inf, 1, 0, -1.0, math.inf, cpu.PIVOTS, ws, False)
    acc, piv, meta = ws[0], ws[1], ws[cpu.LIST_META]
    d = m - z.astype(np.float64)
    assert acc[A_N] == z.size and acc[A_DMAX] == d.max()
    for k in range(cpu.PIVOTS):
        assert acc[A_PIV + 3 * k] == (d <= piv[k]).sum(), k
    near = np.nonzero(d <= meta[cpu.META_NEAR_TOP])[0]
    count = int(meta[cpu.META_NEAR_COUNT])
    assert np.array_equal(ws[cpu.NEAR_I][:count], near) and np.array_equal(ws[cpu.NEAR_D][:count], d[near])


def test_top_h_widens_its_near_tier_when_the_target_lies_past_it():
    """On flat rows (a Gaussian bulk, as in bench/kernels.py) the paper's Top-H target can lie past the
    rough scan's near tier (4 nats): the tier is then widened to 8 nats by one masked read of the row,
    so that the search narrows over the tier instead of float64 passes over the row. The target is still
    certified, and the kept set is the float64 walk's."""
    from entrodec.kernels import cpu
    from entrodec.kernels.row_program import NEAR_NATS

    compiled = cpu.COMPILED
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(64, 40000, generator=g) * 2.5
    rows[:, :8] += torch.rand(64, 8, generator=g) * 8
    widened = 0
    for row in rows:
        z = row.double().numpy()
        entropies, whole = _prefix_entropies(z)
        k = int(np.searchsorted(entropies, 0.4 * whole, side="right"))  # kept tokens
        if z.max() - np.sort(z)[::-1][k] <= 4.0:  # the first token dropped lies in the tier
            continue
        ws = _ws(z.size)
        zf = row.numpy()
        m, _, z_min = compiled["row_max"](zf, ws)
        certain, *_ = compiled["top_h_rough"](zf, m, z_min, 1.0, 0.4, 1.0, ws)
        d = m - zf.astype(np.float64)
        assert certain and ws[cpu.LIST_META][cpu.META_NEAR_COUNT] == (d <= NEAR_NATS).sum()  # the tier: 8 nats
        allowed, near = paper_algorithm_1(z, 0.4)
        assert not near
        _assert_keeps(SamplerChain([TopH(0.4)]), row, allowed[0], k)
        widened += 1
    assert widened >= 3


@pytest.mark.parametrize("hidden", [False, True], ids=["flat", "flat-where-the-probe-looks-not"])
def test_near_tier_top_is_lowered_on_a_flat_row(hidden):
    """A row so flat that a near tier out to 8 nats would hold most of it. The recording scan starts the
    tier lower when a strided sample of the row says so (near_crowded), and lowers its top to the next
    pivot once the tier holds NEAR_CAP tokens when the sample missed them (``hidden``: the sampled
    tokens pushed 30 nats down, so only the overflow can act; the large-row test above checks the kept
    sets). Either way the first round's pivot sums still count and sum every token below each pivot,
    and the tier holds exactly the tokens up to its final top."""
    from entrodec.kernels import cpu
    from entrodec.kernels.launch import _cpu_buffers
    from entrodec.kernels.row_program import A_PIV, NEAR_NATS

    compiled = cpu.COMPILED
    z = torch.randn(30000, generator=torch.Generator().manual_seed(1)).numpy()
    if hidden:
        z[::cpu.PROBE_STRIDE] -= 30.0
    rows_f, rows_i = _cpu_buffers(1, z.shape[0])
    ws = compiled["thread_ws"](0, z.shape[0], compiled["small_arrays"](1), rows_f, rows_i)
    m, _, _ = compiled["row_max"](z, ws)
    assert compiled["near_crowded"](z, m, NEAR_NATS) != hidden
    compiled["scan_all"](z, m, 1.0, math.inf, 1, 0, NEAR_NATS, ws)
    meta, piv, sums = ws[cpu.LIST_META], ws[1], ws[4]
    assert piv[cpu.PIVOTS - 2] == NEAR_NATS and meta[cpu.META_NEAR_TOP] in (piv[cpu.PIVOTS - 3], piv[0])
    d = m - z.astype(np.float64)
    for k in range(cpu.PIVOTS):
        below = d <= piv[k]
        assert sums[A_PIV + 3 * k] == below.sum()
        assert math.isclose(sums[A_PIV + 3 * k + 1], np.exp(-d[below]).sum(), rel_tol=1e-12)
    assert meta[cpu.META_NEAR_COUNT] == (d <= meta[cpu.META_NEAR_TOP]).sum() < cpu.NEAR_CAP


def test_work_arrays_and_thread_count_do_not_change_results():
    """The CPU backend keeps its vocabulary-sized work arrays from call to call and runs a batch smaller
    than its thread count on fewer threads: whatever ran before, a row gives the same tokens and kept
    set, alone or in a batch, and Numba's thread count is what it was."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 3000, generator=g) * 3
    chain = SamplerChain([Temperature(1.5), TopH(0.4)])
    threads = numba.get_num_threads()
    first = chain.sample(None, scores, seeds=[1, 2, 3], steps=5)
    chain.sample(None, torch.randn(1, 40, generator=g), seeds=9)  # another vocabulary, one row
    assert numba.get_num_threads() == threads
    alone = [chain.sample(None, scores[i:i + 1], seeds=i + 1, steps=5) for i in range(3)]
    assert numba.get_num_threads() == threads
    again = chain.sample(None, scores, seeds=[1, 2, 3], steps=5)
    assert torch.equal(torch.cat([a.tokens for a in alone]), first.tokens)
    assert torch.equal(torch.cat([a.telemetry.kept for a in alone]), first.telemetry.kept)
    assert torch.equal(again.tokens, first.tokens) and torch.equal(again.telemetry.kept, first.telemetry.kept)


@pytest.mark.parametrize("sampler", [
    lambda: [Temperature(1.3), TopH(0.6)],
    lambda: [Temperature(1.0), MinP(0.05)],
    lambda: [Temperature(0.9), TopP(0.9)],
    lambda: [EntropyTemperature("edt", temperature=1.5, theta=0.4)],
    lambda: [EntropyTemperature("hapo", temperature=1.2, tau=0.3, window=8), TopK(50)],
    lambda: "llama",
], ids=["top_h", "min_p", "top_p", "edt", "hapo", "llama_preset"])
def test_generate_is_token_for_token_the_same_with_and_without_kernels(tiny_model, sampler):
    model, tok = tiny_model
    prompts = ["hello there", "a longer prompt that needs padding", "x"]
    fused = generate(model, tok, prompts, sampler=sampler(), max_new_tokens=24, seed=[3, 4, 5], ignore_eos=True)
    with use_kernels(False):
        reference = generate(model, tok, prompts, sampler=sampler(), max_new_tokens=24, seed=[3, 4, 5], ignore_eos=True)
    assert fused.token_ids == reference.token_ids
    for a, b in zip(fused.telemetry, reference.telemetry):
        assert a.kept == b.kept
        assert np.allclose(a.entropy_before, b.entropy_before, rtol=1e-4)
        assert np.allclose(a.temperature, b.temperature, rtol=1e-5)


def test_kernel_compilation_is_cached_on_disk():
    """A fresh process loads the compiled CPU kernel from Numba's on-disk cache instead of compiling it."""
    code = ("import torch; from entrodec.decoding import TopH; from entrodec.kernels.cpu import COMPILED; "
            "TopH(0.4)(None, torch.randn(2, 50)); print(sum(COMPILED['run_chain'].stats.cache_hits.values()))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in range(2)]
    assert int(runs[1].stdout) >= 1, [r.stdout + r.stderr for r in runs]


def test_boundary_differences_are_rare():
    for name, (differed, total) in NEAR.items():
        assert total > 0
        assert differed / total < 0.05, f"{name}: kernel and reference differed in {differed} of {total} cases"


@pytest.mark.slow
def test_cuda_kernels_under_the_simulator():
    """tests/test_kernels_cuda.py in Numba's CUDA simulator (CI has no GPU): the same kernel source
    that runs on the device."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    tests = Path(__file__).parent / "test_kernels_cuda.py"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-W", "ignore",
                           str(tests)], capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
