"""Entropy-adaptive model switching: each token comes from the active model given the full prefix,
both caches stay correct, rows switch on their own, and the telemetry adds up."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from entrodec.decoding import ModelSwitch, Temperature, TopH, generate, make_draft
from entrodec.decoding.switch import parameter_count

pytestmark = pytest.mark.model

PROMPTS = ["hello there", "The capital of France is a long story", "one two"]
TOKENS = 24


def _tiny(tokenizer, seed: int, layers: int, scale: float = 30.0, vocab: int | None = None):
    """A random Llama whose head is scaled so next-token entropies spread over several bits."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab or len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def pair(default_model):
    _, tokenizer = default_model
    return _tiny(tokenizer, 0, 3), _tiny(tokenizer, 1, 1), tokenizer


def _median_entropy_bits(large, tokenizer) -> float:
    out = generate(large, tokenizer, PROMPTS, max_new_tokens=TOKENS, ignore_eos=True)
    return float(torch.tensor([h for row in out.entropies for h in row]).median()) / math.log(2)


def _recomputed(model, prompt_ids, generated):
    """Next-token logits after ``prompt + generated[:i]`` for every i, without any cache."""
    ids = torch.tensor([prompt_ids + generated])
    with torch.no_grad():
        logits = model(ids).logits[0]
    return logits[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(generated)]


def _switch_counts(models):
    return sum(a != b for a, b in zip(models, models[1:]))


def test_infinite_thresholds_are_each_model_alone(pair):
    large, small, tok = pair
    kw = dict(max_new_tokens=TOKENS, ignore_eos=True)
    never_large = generate(large, tok, PROMPTS, switch=ModelSwitch(small, math.inf), **kw)
    assert never_large.token_ids == generate(small, tok, PROMPTS, **kw).token_ids
    assert all(set(row.models) == {"small"} for row in never_large.switching)
    only_large = generate(large, tok, PROMPTS, switch=ModelSwitch(small, -math.inf), **kw)
    assert only_large.token_ids == generate(large, tok, PROMPTS, **kw).token_ids
    assert all(set(row.models) == {"large"} for row in only_large.switching)
    # Costs: the small model alone is P_S/P_L; the large alone pays one extra small prefill position.
    ratio = parameter_count(small) / parameter_count(large)
    assert never_large.switch_summary()["cost"] == pytest.approx(ratio)
    assert only_large.switching[0].cost == pytest.approx(1 + ratio / TOKENS)


@pytest.mark.parametrize("entropy_of", ["active", "small"])
def test_every_token_is_the_active_models_choice_given_the_full_prefix(pair, entropy_of):
    large, small, tok = pair
    switch = ModelSwitch(small, _median_entropy_bits(large, tok), window=2, min_dwell=2, entropy_of=entropy_of)
    out = generate(large, tok, PROMPTS, max_new_tokens=TOKENS, ignore_eos=True, switch=switch)
    switches = 0
    for prompt, ids, row in zip(PROMPTS, out.token_ids, out.switching):
        prompt_ids = tok(prompt)["input_ids"]
        assert len(row.models) == len(row.rolling_entropy_bits) == len(ids) == TOKENS
        by_model = {name: _recomputed(m, prompt_ids, ids) for name, m in (("large", large), ("small", small))}
        for i, (token, name) in enumerate(zip(ids, row.models)):
            logits = by_model[name][i]
            assert logits[token] >= logits.max() - 1e-4, f"token {i} is not the {name} model's greedy choice"
        # The rolling mean the rule saw is rebuilt from the recomputed entropies of the signal's model.
        signal = [by_model[name if entropy_of == "active" else "small"][i] for i, name in enumerate(row.models)]
        bits = [float(torch.distributions.Categorical(logits=s).entropy()) / math.log(2) for s in signal]
        rolling = [sum(bits[max(0, i - 1): i + 1]) / len(bits[max(0, i - 1): i + 1]) for i in range(len(bits))]
        assert row.rolling_entropy_bits == pytest.approx(rolling, abs=1e-3)
        switches += _switch_counts(row.models)
    assert switches >= 3, "the threshold should make rows switch both ways"


def test_counters_follow_from_which_model_wrote_each_token(pair):
    """A model reads every token up to its last turn: those before are catch-up unless it wrote the
    step right after them; the small model also prefills every prompt to pick the first model."""
    large, small, tok = pair
    switch = ModelSwitch(small, _median_entropy_bits(large, tok), window=1, min_dwell=1)
    out = generate(large, tok, PROMPTS, max_new_tokens=TOKENS, ignore_eos=True, switch=switch)
    for row in out.switching:
        steps = list(enumerate(row.models, start=1))
        for name in ("small", "large"):
            active = [k for k, m in steps if m == name]
            last = max(active, default=0)
            later_turns = sum(1 for k in active if k >= 2)
            prefill = 1 if name == "small" else 0
            assert row.positions[name] == max(last, prefill)
            assert row.catch_up_tokens[name] == max(last - 1 - later_turns, 0)
        assert row.large_fraction == row.models.count("large") / TOKENS
        expected = (row.parameters["small"] * row.positions["small"] + row.parameters["large"] * row.positions["large"])
        assert row.cost == pytest.approx(expected / (row.parameters["large"] * TOKENS))
        assert row.cost_passes <= row.cost + 1e-9


def test_batched_rows_that_switch_at_different_times_equal_each_row_alone(pair):
    large, small, tok = pair
    switch = ModelSwitch(small, _median_entropy_bits(large, tok), window=2, min_dwell=3)
    sampler = [Temperature(1.3), TopH(0.6)]
    kw = dict(max_new_tokens=TOKENS, ignore_eos=True, switch=switch, sampler=sampler, seed=[3, 4, 5])
    batched = generate(large, tok, PROMPTS, **kw)
    patterns = {tuple(row.models) for row in batched.switching}
    assert len(patterns) == len(PROMPTS), "rows should switch at different times"
    for i, prompt in enumerate(PROMPTS):
        alone = generate(large, tok, prompt, **{**kw, "seed": kw["seed"][i]})
        assert alone.token_ids[0] == batched.token_ids[i]
        assert alone.switching[0].models == batched.switching[i].models


def _finish_while_another_switches(result) -> bool:
    """Some row ends at its k-th token in the step where a row still running changes model."""
    for ids in result.token_ids:
        k = len(ids)
        for other in result.switching:
            if len(other.models) > k and other.models[k] != other.models[k - 1]:
                return True
    return False


def test_rows_finishing_while_others_switch_keep_the_rest_correct(pair):
    """Rows leave at stop strings in the very step other rows change model (n samples share a prompt)."""
    large, small, tok = pair
    switch = ModelSwitch(small, _median_entropy_bits(large, tok), window=1, min_dwell=1)
    kw = dict(max_new_tokens=TOKENS, switch=switch, sampler=[Temperature(1.5)], stop=["e"], n=4)
    seed = next(s for s in range(20) if _finish_while_another_switches(generate(large, tok, PROMPTS[:2], **kw, seed=s)))
    batched = generate(large, tok, PROMPTS[:2], **kw, seed=seed)
    for i, prompt in enumerate(PROMPTS[:2]):
        alone = generate(large, tok, prompt, **kw, seed=seed)
        assert alone.token_ids == batched.token_ids[4 * i: 4 * i + 4]
        assert [r.models for r in alone.switching] == [r.models for r in batched.switching[4 * i: 4 * i + 4]]
    assert all(len(r.models) == len(ids) for r, ids in zip(batched.switching, batched.token_ids))


def test_streaming_gives_the_same_text_and_telemetry(pair):
    large, small, tok = pair
    switch = ModelSwitch(small, _median_entropy_bits(large, tok), window=2, min_dwell=2)
    plain = generate(large, tok, PROMPTS[0], max_new_tokens=12, switch=switch, ignore_eos=True)
    stream = generate(large, tok, PROMPTS[0], max_new_tokens=12, switch=switch, ignore_eos=True, stream=True)
    assert "".join(event.text for event in stream) == plain.texts[0]
    assert stream.result.switching[0].models == plain.switching[0].models


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(threshold_bits=float("nan")), ValueError, "`threshold_bits` must be a number"),
    (dict(threshold_bits="3"), ValueError, "`threshold_bits` must be a number"),
    (dict(threshold_bits=3.0, window=0), ValueError, "`window` must be an integer >= 1, got 0"),
    (dict(threshold_bits=3.0, min_dwell=-1), ValueError, "`min_dwell` must be an integer >= 0, got -1"),
    (dict(threshold_bits=3.0, entropy_of="large"), ValueError, "`entropy_of` must be one of active, small"),
])
def test_bad_arguments_are_named(pair, kwargs, error, message):
    _, small, _ = pair
    with pytest.raises(error, match=message):
        ModelSwitch(small, **kwargs)


def test_models_that_do_not_share_a_vocabulary_are_refused(pair):
    large, _, tok = pair
    other = _tiny(tok, 2, 1, vocab=1000)
    with pytest.raises(ValueError, match="small model's vocabulary has 1000 entries and the large model's 49152"):
        generate(large, tok, "hi", switch=ModelSwitch(other, 2.0))
    with pytest.raises(TypeError, match="`small_model` must be a causal LM"):
        ModelSwitch("small.gguf", 2.0)
    with pytest.raises(TypeError, match="`switch` must be a ModelSwitch"):
        generate(large, tok, "hi", switch=0.5)


def test_a_different_tokenizer_is_refused_with_what_differs(pair):
    large, small, tok = pair

    class Shifted:
        def get_vocab(self):
            vocab = dict(tok.get_vocab())
            vocab["<extra>"] = len(vocab)
            return vocab

    with pytest.raises(ValueError, match=r"tokenizer differs .*1 only in the small one, 0 with other ids; e.g. '<extra>'"):
        generate(large, tok, "hi", switch=ModelSwitch(small, 2.0, tokenizer=Shifted()))


def test_early_exit_draft_is_the_first_layers_then_the_final_norm_and_head(pair):
    large, _, tok = pair
    draft = make_draft(large, layers=2)
    ids = torch.tensor([tok("a short text to read")["input_ids"]])
    with torch.no_grad():
        hidden = large(ids, output_hidden_states=True).hidden_states[2]
        expected = large.lm_head(large.model.norm(hidden))
        torch.testing.assert_close(draft(ids).logits, expected, rtol=0, atol=1e-5)
    assert draft.config.num_hidden_layers == 2 and large.config.num_hidden_layers == 3
    with pytest.raises(ValueError, match=r"`layers` must be an integer in \[1, 2\] for this 3-layer model, got 3"):
        make_draft(large, layers=3)
    with pytest.raises(ValueError, match="`distill_tokens` must be an integer >= 0"):
        make_draft(large, layers=1, distill_tokens=-5)


def test_distillation_lowers_the_held_out_kl_and_is_cached(pair, tmp_path, monkeypatch):
    large, _, tok = pair
    monkeypatch.setenv("ENTRODEC_CACHE", str(tmp_path))
    kw = dict(layers=1, distill_tokens=300, tokenizer=tok, epochs=3, lr=3e-3, batch_size=4, progress=False,
              prompts=["Tell me a story.", "Explain rain.", "List fruits.", "Say hello."])
    draft = make_draft(large, **kw)
    report = draft.config.entrodec_draft
    assert report["kl_after"] < report["kl_before"]
    assert len(list((tmp_path / "drafts").iterdir())) == 1

    def must_not_write(*args, **kwargs):
        raise AssertionError("a cached draft must not be distilled again")

    monkeypatch.setattr("entrodec.decoding.draft.teacher_text", must_not_write)
    again = make_draft(large, **kw)
    for a, b in zip(draft.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert again.config.entrodec_draft["kl_after"] == pytest.approx(report["kl_after"])
