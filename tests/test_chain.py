"""SamplerChain: order, draws that follow the processed distribution, seeds, presets and YAML."""

import math

import pytest
import torch
from scipy.stats import chisquare

from entrodec.decoding import (
    MinP,
    SamplerChain,
    Temperature,
    TopH,
    TopK,
    available_presets,
    chain_from_yaml,
    load_preset,
)
from entrodec.decoding.draw import race_draw
from entrodec.kernels import use_kernels


def test_order_matters():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    hot_first = SamplerChain([Temperature(4.0), MinP(0.5)])(None, scores)
    hot_last = SamplerChain([MinP(0.5), Temperature(4.0)])(None, scores)
    assert torch.isfinite(hot_first).sum() == 3  # heat widens what min-p keeps
    assert torch.isfinite(hot_last).sum() == 1


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "torch"])
@pytest.mark.parametrize("chain", [
    SamplerChain([Temperature(1.5), TopH(0.6)]),
    SamplerChain([Temperature(0.8), MinP(0.05)]),
    SamplerChain([TopK(4), Temperature(2.0)]),
])
def test_draws_follow_the_processed_distribution(chain, kernels):
    torch.manual_seed(0)
    scores = torch.randn(1, 8) * 2
    scores[0, 5] = -math.inf
    with use_kernels(kernels):
        processed = chain(None, scores)
        draws = 20000
        tokens = chain.sample(None, scores.expand(draws, -1), seeds=torch.arange(draws), steps=0).tokens
    expected = torch.softmax(processed[0].double(), -1)
    counts = torch.bincount(tokens, minlength=8).double()
    support = expected > 0
    assert counts[~support].sum() == 0, "drew a removed token"
    result = chisquare(counts[support].numpy(), (expected[support] * draws).numpy())
    assert result.pvalue > 1e-3, result


def test_same_seed_same_draws_any_batch_position():
    scores = torch.randn(3, 50)
    alone = race_draw(scores[1:2], [7], steps=4)
    batched = race_draw(scores, [1, 7, 3], steps=4)
    assert alone[0] == batched[1]


def test_steps_and_seeds_change_the_draw():
    scores = torch.zeros(1, 1000)  # uniform: a repeated token would be a one-in-a-thousand coincidence
    draws = {int(race_draw(scores, [seed], steps=step)[0]) for seed in range(3) for step in range(3)}
    assert len(draws) >= 8
    assert int(race_draw(scores, [5], steps=2)[0]) == int(race_draw(scores, [5], steps=2)[0])


def test_a_removed_token_is_never_drawn_even_when_alone():
    scores = torch.full((4, 6), -math.inf)
    scores[torch.arange(4), torch.tensor([0, 5, 2, 3])] = 1.0
    assert race_draw(scores, [0, 1, 2, 3]).tolist() == [0, 5, 2, 3]


def test_chain_plugs_in_as_a_processor_and_rejects_non_processors():
    with pytest.raises(TypeError, match="sampler entry 1 must be a logits processor, got int"):
        SamplerChain([Temperature(1.0), 3])


def test_presets_ship_and_build():
    names = available_presets()
    assert {"hf", "llama", "creative", "precise"} <= set(names)
    for name in names:
        assert len(load_preset(name)) >= 1
    llama = load_preset("llama")
    assert isinstance(llama.processors[-1], Temperature)  # llama.cpp order: temperature last
    hf = load_preset("hf")
    assert isinstance(hf.processors[0], Temperature)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown sampler preset 'nope'; available presets: balanced, creative"):
        load_preset("nope")


def test_yaml_chain(tmp_path):
    text = "chain:\n  - temperature: 1.5\n  - top_h: {alpha: 0.4, rule: hf}\n"
    chain = chain_from_yaml(text)
    assert [type(p).__name__ for p in chain] == ["Temperature", "TopH"]
    assert chain.processors[1].rule == "hf"
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    assert len(chain_from_yaml(path)) == 2
    with pytest.raises(ValueError, match="unknown processor 'top_q'"):
        chain_from_yaml("chain:\n  - top_q: 0.3\n")
    with pytest.raises(ValueError, match=r"chain entry 0 \(top_h\): .*unexpected keyword argument 'beta'"):
        chain_from_yaml("chain:\n  - top_h: {beta: 0.3}\n")
    with pytest.raises(ValueError, match="`alpha` must be in"):
        chain_from_yaml("chain:\n  - top_h: 3\n")


def test_presets_may_turn_on_model_switching():
    from entrodec.decoding.presets import preset_switch

    eco = preset_switch("eco")
    assert eco["small"] == "draft:8:16000" and eco["threshold_bits"] > 0
    assert all(preset_switch(name) is None for name in available_presets() if name != "eco")
