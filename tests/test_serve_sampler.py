"""Request fields → sampler chains: which processors, in which order, shared between requests when safe."""

import pytest

from entrodec.serve.errors import APIError
from entrodec.serve.request_sampler import SharedSamplers, sampler_for
from entrodec.serve.schema import ChatRequest, parse

MESSAGES = [{"role": "user", "content": "x"}]


def _chain(**fields):
    return sampler_for(parse(ChatRequest, {"messages": MESSAGES, **fields}))


def _names(chain):
    return [type(p).__name__ for p in chain]


def test_fields_build_processors_in_transformers_order():
    assert _names(_chain()) == ["Temperature"]  # OpenAI's default: temperature 1
    chain = _chain(temperature=1.5, top_h=0.4, top_h_rule="hf", min_p=0.1, top_k=40, top_p=0.9)
    assert _names(chain) == ["Temperature", "TopK", "TopP", "MinP", "TopH"]
    assert chain.processors[-1].rule == "hf"
    assert _names(_chain(top_k=0, top_p=1.0, typical_p=1.0, min_p=0.0)) == ["Temperature"]  # "off" values add nothing
    assert _names(_chain(epsilon_cutoff=0.01, eta_cutoff=0.01, top_n_sigma=1.0, typical_p=0.9)) == [
        "Temperature", "Typical", "EpsilonCutoff", "EtaCutoff", "TopNSigma"]


def test_samplers_sets_the_order_and_temperature_zero_is_greedy():
    assert _names(_chain(temperature=0.8, min_p=0.05, samplers=["min_p", "temperature"])) == ["MinP", "Temperature"]
    assert _names(_chain(min_p=0.05, samplers=["min_p"])) == ["MinP"]  # no temperature asked for, none applied
    assert _chain(temperature=0, top_h=0.4) is None


def test_entropy_temperatures():
    dyn = _chain(temperature=1.0, dynatemp_range=0.5, dynatemp_exponent=2.0).processors[0]
    assert (dyn.kind, _names([dyn])) == ("dynatemp", ["EntropyTemperature"])
    edt = _chain(entropy_temperature="edt", edt_theta=0.3).processors[0]
    assert edt.kind == "edt"
    assert _chain(entropy_temperature="hapo", hapo_window=8).processors[0].kind == "hapo"
    with pytest.raises(APIError) as error:
        _chain(hapo_tau=0.1)
    assert error.value.param == "hapo_tau" and "entropy_temperature: hapo" in error.value.message


def test_presets_and_yaml_style_chains():
    assert _names(_chain(sampler="llama")) == ["TopK", "TopP", "MinP", "Temperature"]
    assert _names(_chain(sampler=[{"temperature": 1.5}, {"top_h": {"alpha": 0.4}}])) == ["Temperature", "TopH"]
    with pytest.raises(APIError) as error:
        _chain(sampler="creative", temperature=0.5)
    assert error.value.param == "sampler" and "temperature" in error.value.message


def test_identical_settings_share_a_chain_but_stateful_ones_never_do():
    shared = SharedSamplers(size=2)
    ask = lambda **f: shared(parse(ChatRequest, {"messages": MESSAGES, **f}))  # noqa: E731
    first = ask(temperature=1.5, top_h=0.4, seed=1)
    assert ask(temperature=1.5, top_h=0.4, seed=2, n=3) is first  # seeds and n are not sampler settings
    assert ask(temperature=1.5, top_h=0.5) is not first
    assert ask(entropy_temperature="hapo") is not ask(entropy_temperature="hapo")  # rolling entropy windows
    ask(temperature=0.3)
    ask(temperature=0.4)
    assert ask(temperature=1.5, top_h=0.4) is not first  # evicted: at most `size` chains are kept
