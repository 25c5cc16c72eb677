"""The CUDA kernels, on a GPU or in Numba's CUDA simulator:

    pytest -m cuda tests/test_kernels_cuda.py                              # on a GPU machine
    NUMBA_ENABLE_CUDASIM=1 pytest -m cuda tests/test_kernels_cuda.py       # anywhere (CI does this)

The CUDA kernel must equal the CPU kernel (the same algorithm in float64; tokens, kept sets and
processed logits exactly, telemetry to 1e-9), and on a GPU the processors on CUDA tensors must equal
the torch reference there.
"""

import math

import numba
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import cuda

from entrodec.kernels import program as P

from strategies import logit_rows

SIMULATED = bool(numba.config.ENABLE_CUDASIM)
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not cuda.is_available(), reason="no GPU (and not simulated)")]
on_gpu = pytest.mark.skipif(SIMULATED or not torch.cuda.is_available(), reason="needs a real GPU")
SETTINGS = settings(max_examples=6 if SIMULATED else 300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_VOCAB = 24 if SIMULATED else 400

PROGRAMS = {
    "T 1.5, Top-H 0.4": [(P.TEMPERATURE, 1.5), (P.TOP_H, 0.4, 1)],
    "Top-H hf 0.4": [(P.TOP_H_HF, 0.4, 1)],
    "T 1, top-p 0.9": [(P.TEMPERATURE, 1.0), (P.TOP_P, 0.9, 1)],
    "T 0.7, min-p 0.1": [(P.TEMPERATURE, 0.7), (P.MIN_P, 0.1, 1)],
    "top-k 5, T 2": [(P.TOP_K, 5, 1), (P.TEMPERATURE, 2.0)],
    "epsilon, eta, n-sigma": [(P.EPSILON, 0.01, 2), (P.ETA, 0.02, 1), (P.TOP_N_SIGMA, 1.5, 1)],
    "dynatemp, top-p": [(P.DYNATEMP, 0.8, 0.5, 1.0), (P.TOP_P, 0.95, 2)],
    "EDT, Top-H": [(P.EDT, 1.2, 0.2, 0.8), (P.TOP_H, 0.5, 3)],
    "HAPO": [(P.HAPO, 1.0, 0.3, 1.0, 0.2, 0.5, 0.7, 1.3)],
    "greedy, top-p": [(P.TEMPERATURE, 0.0), (P.TOP_P, 0.5, 1)],
    "top-p 0, Top-H 1": [(P.TOP_P, 0.0, 2), (P.TOP_H, 1.0, 1)],
}


def run(backend, z, program, seeds, step, mode=P.DRAW | P.TELEMETRY | P.WRITE):
    from entrodec.kernels import launch

    batch = z.shape[0]
    ops = np.array([op[0] for op in program], dtype=np.int64)
    params = np.zeros((batch, len(program), P.SLOTS))
    for j, op in enumerate(program):
        params[:, j, : len(op) - 1] = op[1:]
    keys = np.stack([seeds, np.full(batch, step)], axis=1).astype(np.int64)
    out = np.empty_like(z)
    tel = np.empty((batch, P.telemetry_width(len(program))))
    limit = float(np.finfo(np.float32).max)
    if backend == "cpu":
        launch.run_cpu_arrays(z, ops, params, keys, out, tel, mode, limit)
    else:
        from entrodec.kernels import cuda as cuda_backend

        with np.errstate(over="ignore"):  # the simulator's uint64 arithmetic wraps, as the device's does
            cuda_backend.run_chain_arrays(z, ops, params, keys, out, tel, mode, limit)
    return out, tel


def assert_same(z, program, seeds, step):
    out_cpu, tel_cpu = run("cpu", z, program, seeds, step)
    out_gpu, tel_gpu = run("cuda", z, program, seeds, step)
    assert np.array_equal(tel_gpu[:, P.T_TOKEN], tel_cpu[:, P.T_TOKEN])
    assert np.array_equal(np.isfinite(out_gpu), np.isfinite(out_cpu))
    assert np.array_equal(out_gpu, out_cpu)
    # Reports the CPU may take with float32 exponentials, as precise as the reference's own: the raw row's
    # sums (entropy and log-probability before the chain) when the chain starts with a temperature, and
    # the kept set's (after) when it is every finite token
    raw = [P.T_H_BEFORE, P.T_LOGP_BEFORE]
    after = [P.T_H_AFTER, P.T_LOGP_AFTER]
    rest = [k for k in range(tel_cpu.shape[1]) if k not in raw + after]
    whole = tel_cpu[:, P.T_KEPT] == np.isfinite(z).sum(-1)
    assert np.allclose(tel_gpu[:, raw], tel_cpu[:, raw], rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.allclose(tel_gpu[whole][:, after], tel_cpu[whole][:, after], rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.allclose(tel_gpu[~whole][:, after], tel_cpu[~whole][:, after], rtol=1e-9, atol=1e-9, equal_nan=True)
    assert np.allclose(tel_gpu[:, rest], tel_cpu[:, rest], rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@SETTINGS
@given(z=logit_rows(max_vocab=MAX_VOCAB), seed=st.integers(0, 2**40), step=st.integers(0, 10**6))
def test_cuda_kernel_equals_cpu_kernel(name, z, seed, step):
    z = z.numpy()
    assert_same(z, PROGRAMS[name], np.arange(z.shape[0]) + seed, step)


@pytest.mark.parametrize("name", ["T 1.5, Top-H 0.4", "Top-H hf 0.4", "T 1, top-p 0.9", "top-k 5, T 2"])
def test_brackets_wider_than_shared_memory_are_narrowed(name):
    """More candidates than the block can sort: the search narrows its bracket over several rounds."""
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(1, 300)) * 0.05).astype(np.float32)  # nearly flat: hundreds of candidates
    assert_same(z, PROGRAMS[name], np.array([1]), 7)


@pytest.mark.parametrize("name", ["top-k 5, T 2", "T 1, top-p 0.9", "Top-H hf 0.4", "greedy, top-p"])
def test_tie_groups_larger_than_shared_memory(name):
    z = np.zeros((1, 150), dtype=np.float32)  # more tied tokens than the block can sort (CAP)
    z[0, [7, 100]] = 3.0
    assert_same(z, PROGRAMS[name], np.array([4]), 0)


def test_all_masked_row():
    z = np.full((2, 20), -np.inf, dtype=np.float32)
    z[0, 5] = 1.0
    _, tel = run("cuda", z, PROGRAMS["T 1, top-p 0.9"], np.array([1, 2]), 0)
    assert tel[0, P.T_TOKEN] == 5 and tel[1, P.T_STATUS] == P.STATUS_EMPTY


@on_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(z=logit_rows(max_vocab=400), alpha=st.floats(0.05, 1.0), p=st.floats(0.05, 0.99))
def test_processors_on_cuda_tensors_equal_the_torch_reference(dtype, z, alpha, p):
    from entrodec.decoding import MinP, Temperature, TopH, TopK, TopP
    from entrodec.kernels import use_kernels

    from test_kernels import _near_min_p, _near_top_h_paper, _near_top_p

    scores = z.clamp(-6e4, 6e4).to(dtype).cuda()
    rows = scores.float().double().cpu().numpy()
    cases = [(TopK(5), False), (TopH(alpha), any(_near_top_h_paper(r, alpha) for r in rows)),
             (TopP(p), any(_near_top_p(r, p) for r in rows)), (MinP(p), any(_near_min_p(r, p) for r in rows)),
             (Temperature(1.7), False)]
    for processor, near in cases:
        with use_kernels(False):
            reference = processor(None, scores)
        fused = processor(None, scores)
        assert fused.device == scores.device and fused.dtype == dtype
        if not near:
            assert torch.equal(torch.isfinite(fused), torch.isfinite(reference)), processor


@on_gpu
def test_fused_chain_on_cuda_draws_the_reference_token():
    from entrodec.decoding import SamplerChain, Temperature, TopH
    from entrodec.decoding.draw import race_draw

    torch.manual_seed(0)
    scores = (torch.randn(64, 151936) * 3).cuda()
    chain = SamplerChain([Temperature(1.5), TopH(0.4)])
    drawn = chain.sample(None, scores, seeds=torch.arange(64), steps=3)
    assert drawn.tokens.is_cuda
    assert torch.equal(drawn.tokens, race_draw(chain(None, scores), torch.arange(64), 3))
    assert math.isfinite(float(drawn.telemetry.entropy_before[0]))
