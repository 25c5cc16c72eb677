"""entrodec.search: annealing and resampling against the spec's formulas, and particle filtering whose
every particle's cache is checked against a recomputation from scratch."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrodec.decoding import TopK, generate
from entrodec.decoding.entropy import log_probs
from entrodec.search import (
    Annealing, BestOfN, EntropicParticleFilter, ParticleFilter, ParticleTrace, ProcessRewardModel, SelfCertainty,
    SelfConsistency, StepVerifier, effective_sample_size, entropy_temperature, ess_temperature, last_number,
    multinomial, reward_logit, systematic, vote,
)
from entrodec.search.annealing import normalised
from entrodec.search.stepping import step_complete

# --- annealing -------------------------------------------------------------------------------------


def test_annealing_worked_values_of_the_spec():
    assert ess_temperature(0.2, 0.2) == pytest.approx(4.0)
    assert ess_temperature(0.5, 0.8) == 1.0
    assert ess_temperature(0.5, 0.2) == 1.0  # the ESS condition is strict
    assert ess_temperature(0.2, 0.5) == 1.0  # and so is the progress one
    assert ess_temperature(0.9, 0.1, ess_threshold=0.95) == 1.0  # (1/0.9)·0.9 = 1: never below 1
    assert entropy_temperature(0.5, 0.3) == pytest.approx(1 / 0.65)
    assert round(entropy_temperature(0.5, 0.3), 3) == 1.538
    assert entropy_temperature(1.0, 0.0) == 1.0  # uniform weights are left alone


def test_annealing_reads_ess_and_entropy_from_the_weights():
    p = torch.tensor([0.85, 0.05, 0.05, 0.05], dtype=torch.float64)
    ess = 1 / float((p**2).sum())
    assert effective_sample_size(p) == pytest.approx(ess)
    assert Annealing("ess").temperature(p, 0.25) == pytest.approx((4 / ess) * 0.75)
    hn = float(-(p * p.log()).sum()) / math.log(4)
    assert Annealing("entropy").temperature(p, 0.25) == pytest.approx(1 / (hn + (1 - hn) * 0.25))
    assert Annealing("none").temperature(p, 0.25) == 1.0
    assert Annealing("ess", ess_threshold=0.2).temperature(p, 0.25) == 1.0


@given(st.lists(st.floats(-30, 30), min_size=1, max_size=20), st.floats(0, 1), st.sampled_from(["ess", "entropy", "none"]))
def test_annealing_temperature_is_never_below_one(log_weights, progress, schedule):
    assert Annealing(schedule).temperature(normalised(log_weights), progress) >= 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"schedule": "cosine"}, "`annealing` must be one of ess, entropy, none"),
    ({"ess_threshold": 0.0}, "`ess_threshold` must be in"),
    ({"progress_threshold": 1.5}, "`progress_threshold` must be in"),
])
def test_annealing_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Annealing(**kwargs)


# --- resampling ------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12).filter(lambda w: sum(w) > 1e-3), st.integers(1, 40), st.integers(0, 2**31))
def test_systematic_resampling_copies_each_particle_floor_or_ceil_of_n_w(raw, n, seed):
    p = torch.tensor(raw, dtype=torch.float64)
    p = p / p.sum()
    chosen = systematic(p, n, torch.Generator().manual_seed(seed))
    assert len(chosen) == n and chosen == sorted(chosen)
    for i, w in enumerate(p.tolist()):
        count = chosen.count(i)
        assert math.floor(n * w - 1e-9) <= count <= math.ceil(n * w + 1e-9)
        if w == 0:
            assert count == 0


def test_multinomial_resampling_follows_the_weights():
    from scipy.stats import chisquare

    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    chosen = multinomial(p, 20000, torch.Generator().manual_seed(0))
    counts = [chosen.count(i) for i in range(4)]
    assert chisquare(counts, (p * 20000).tolist()).pvalue > 1e-3


def test_reward_logit_clips_before_the_logit():
    assert reward_logit(0.5) == 0.0
    assert reward_logit(0.0) == pytest.approx(math.log(1e-7 / (1 - 1e-7)))
    assert reward_logit(1.0) == pytest.approx(-reward_logit(0.0))
    assert reward_logit(0.9) == pytest.approx(math.log(9))


# --- steps, answers, rewards -----------------------------------------------------------------------


def test_step_ends_at_the_delimiter_after_content():
    assert not step_complete("\n\n", "\n\n")
    assert not step_complete("\n\n\n\n  ", "\n\n")
    assert not step_complete("3 + 4 = 7\n", "\n\n")
    assert step_complete("\n\n3 + 4 = 7\n\n", "\n\n")
    assert step_complete("a;b", ";")


def test_answers_and_votes():
    assert last_number("so 3 + 4 = 7, answer -12.50") == "-12.5"
    assert last_number("1,000 apples") == "1000"
    assert vote([None, None]) == (None, {})
    assert vote(["1", "2", "2", "1"]) == ("1", {"1": 2.0, "2": 2.0})  # ties: first seen
    assert vote(["1", "2", "2"], [0.9, 0.05, 0.05])[0] == "1"


def test_step_verifier_checks_what_the_callable_returns():
    assert StepVerifier(lambda prompt, text: len(text) / 10).score("q", [ParticleTrace(text="abcde")]) == [0.5]
    with pytest.raises(ValueError, match=r"the reward callable too_big must return a number in \[0, 1\], got 2"):
        def too_big(prompt, text):
            return 2
        StepVerifier(too_big).score("q", [ParticleTrace(text="x")])
    with pytest.raises(ValueError, match="got nan"):
        StepVerifier(lambda p, t: float("nan")).score("q", [ParticleTrace()])
    with pytest.raises(TypeError, match="`reward` must be callable"):
        StepVerifier(3)


def test_self_certainty_scores_the_latest_step_only():
    trace = ParticleTrace(token_ids=[1, 2, 3], logprobs=[-9.0, -0.2, -0.4], entropies=[5.0, 0.5, 1.5], step_starts=[0, 1])
    assert SelfCertainty("logprob").score("", [trace]) == [pytest.approx(math.exp(-0.3))]
    assert SelfCertainty("entropy").score("", [trace]) == [pytest.approx(math.exp(-1.0))]
    with pytest.raises(ValueError, match="`measure` must be one of logprob, entropy"):
        SelfCertainty("margin")


# --- process reward models (tiny random heads) -----------------------------------------------------


def _llama_config(tokenizer, labels):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_labels=labels, pad_token_id=tokenizer.pad_token_id,
    )


@pytest.mark.model
def test_sequence_head_prm_scores_equal_the_head_s_probability(default_model):
    from transformers import LlamaForSequenceClassification

    _, tok = default_model
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(_llama_config(tok, 2)).eval()
    prm = ProcessRewardModel(model, tok, batch_size=2)
    particles = [ParticleTrace(text="3 + 4 = 7", step_texts=["3 + 4 = 7"]),
                 ParticleTrace(text="3 + 4 = 8\n\nAnswer: 8", step_texts=["3 + 4 = 8\n\n", "Answer: 8"]),
                 ParticleTrace(text="x", step_texts=["x"])]
    got = prm.score("Add 3 and 4.", particles)
    for trace, score in zip(particles, got):
        ids = tok("Add 3 and 4.\n" + "".join(trace.step_texts), return_tensors="pt")
        with torch.no_grad():
            expected = torch.softmax(model(**ids).logits[0], dim=-1)[1].item()
        assert score == pytest.approx(expected, abs=1e-5)


@pytest.mark.model
def test_token_head_prm_scores_each_step_at_its_marker(default_model):
    from transformers import LlamaForTokenClassification

    _, tok = default_model
    torch.manual_seed(1)
    model = LlamaForTokenClassification(_llama_config(tok, 2)).eval()
    marker = "<|im_end|>"
    trace = ParticleTrace(text="a\n\nb", step_texts=["a\n\n", "b"])
    ids = tok("q\na" + marker + "b" + marker, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**ids).logits[0], dim=-1)[:, 1]
    at = ids["input_ids"][0] == tok.convert_tokens_to_ids(marker)
    steps = p[at]
    assert steps.numel() == 2
    for aggregate, expected in [("last", steps[-1]), ("min", steps.min()), ("mean", steps.mean()), ("prod", steps.prod())]:
        prm = ProcessRewardModel(model, tok, head="token", step_token=marker, aggregate=aggregate)
        assert prm.score("q", [trace]) == [pytest.approx(float(expected), abs=1e-5)]
    with pytest.raises(ValueError, match="must be a single token"):
        ProcessRewardModel(model, tok, head="token", step_token="two words")
    with pytest.raises(ValueError, match="needs `step_token`"):
        ProcessRewardModel(model, tok, head="token")
    with pytest.raises(ValueError, match=r"`positive_label` must be in \[0, 1\]"):
        ProcessRewardModel(model, tok, positive_label=2)
    with pytest.raises(ValueError, match="`head` must be one of sequence, token"):
        ProcessRewardModel(model, tok, head="value")


# --- particle filtering on a tiny random model -----------------------------------------------------

def _recomputed_logprobs(model, prompt_ids, tokens):
    """Log-probabilities of ``tokens`` after ``prompt_ids`` from one full forward pass, no cache."""
    ids = torch.tensor([prompt_ids + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1]
    return log_probs(logits).gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


def _prompt_ids(tok, prompt):
    from entrodec.decoding.prompts import encode_prompt

    return encode_prompt(tok, prompt, True)


class RecordingReward:
    """Scores by text length and records which particles it was shown, with how many tokens."""

    def __init__(self):
        self.calls = []

    def score(self, prompt, particles):
        self.calls.append([(id(p), len(p.token_ids), p.finished) for p in particles])
        return [min(1.0, (len(p.text) % 17) / 16) for p in particles]


@pytest.mark.model
def test_every_particle_s_tokens_were_drawn_from_a_correct_cache(tiny_model):
    """Particles park, fork and merge back with different lengths; every token each final particle
    holds must carry the log-probability the model gives it recomputed from scratch."""
    model, tok = tiny_model
    pf = EntropicParticleFilter(model, tok, reward=RecordingReward(), n_particles=5, step_delimiter="a",
                                max_steps=4, max_step_tokens=5, lookahead=True)
    result = pf.run("Tell me a story.", seed=3)
    assert result.steps == 4 and len(result.particles) == 5
    assert result.reused_prefix_tokens > 0  # resampling forked at least one live particle
    lengths = {len(p.token_ids) for p in result.particles}
    assert len({tuple(len(s) for s in p.step_texts) for p in result.particles}) > 1 or len(lengths) > 1
    prompt = _prompt_ids(tok, "Tell me a story.")
    for trace in result.particles:
        expected = _recomputed_logprobs(model, prompt, trace.token_ids)
        torch.testing.assert_close(torch.tensor(trace.logprobs), expected, rtol=0, atol=2e-4)
        assert trace.text == "".join(trace.step_texts)
    assert result.lookahead_tokens > 0 and result.tokens_generated > result.lookahead_tokens


@pytest.mark.model
def test_greedy_particles_reproduce_greedy_generate(tiny_model):
    model, tok = tiny_model
    pf = ParticleFilter(model, tok, reward=lambda prompt, text: 0.5, n_particles=3, sampler=[TopK(1)],
                        step_delimiter="\x00", max_steps=4, max_step_tokens=3)
    result = pf.run("Hello there", seed=0)
    alone = generate(model, tok, "Hello there", chat=True, max_new_tokens=12)
    assert result.tokens_generated == 3 * 12 and result.lookahead_tokens == 0
    for trace in result.particles:
        assert trace.token_ids == alone.token_ids[0]
        assert trace.finish_reason == "max_steps"
        assert trace.step_starts == [0, 3, 6, 9]


@pytest.mark.model
def test_finished_particles_are_never_extended_but_compete(tiny_model):
    model, tok = tiny_model
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = list(range(0, len(tok), 3))  # a third of the vocabulary ends a particle
    try:
        reward = RecordingReward()
        result = ParticleFilter(model, tok, reward=reward, n_particles=6, step_delimiter="\x00", max_steps=6,
                                max_step_tokens=2).run("Count:", seed=1)
    finally:
        model.generation_config.eos_token_id = original
    finished = [p for p in result.particles if p.finish_reason == "eos"]
    assert finished, "with a third of the vocabulary ending particles, some must finish"
    for trace in result.particles:
        if trace.finish_reason == "eos":
            assert trace.token_ids[-1] % 3 == 0 and all(t % 3 for t in trace.token_ids[:-1])
            assert len(trace.weights) == len(trace.step_starts)  # its weight history stopped with it
    seen_finished = {pid for call in reward.calls for pid, _, fin in call if fin}
    for call in reward.calls[1:]:
        assert all(pid not in seen_finished or fin for pid, _, fin in call)
    assert result.steps <= 6


@pytest.mark.model
def test_lookahead_blends_the_successor_s_log_weight(tiny_model):
    model, tok = tiny_model

    class ByStep:
        def score(self, prompt, particles):
            return [0.2 if len(p.step_starts) == 1 else 0.8 for p in particles]

    def first_weights(weight):
        pf = ParticleFilter(model, tok, reward=ByStep(), n_particles=2, step_delimiter="\x00", max_steps=3,
                            max_step_tokens=2, lookahead=True, lookahead_weight=weight)
        return [p.weights[0] for p in pf.run("Hi", seed=0).particles]

    assert first_weights(0.0) == pytest.approx([reward_logit(0.2)] * 2)
    assert first_weights(0.5) == pytest.approx([0.5 * reward_logit(0.2) + 0.5 * reward_logit(0.8)] * 2)
    assert first_weights(1.0) == pytest.approx([reward_logit(0.8)] * 2)


@pytest.mark.model
def test_entropic_annealing_tempers_collapsed_weights_early(tiny_model):
    model, tok = tiny_model

    class OneWinner:
        def score(self, prompt, particles):
            return [0.999 if k == 0 else 0.001 for k in range(len(particles))]

    result = EntropicParticleFilter(model, tok, reward=OneWinner(), n_particles=4, step_delimiter="\x00", max_steps=4,
                                    max_step_tokens=2, lookahead=False).run("Hi", seed=0)
    ess = result.ess_history[0]
    assert ess / 4 < 0.5
    assert result.temperature_history[0] == pytest.approx(max(1.0, (4 / ess) * (1 - 0.25)))
    assert result.temperature_history[-1] == 1.0  # past half-way the schedule stops
    plain = ParticleFilter(model, tok, reward=OneWinner(), n_particles=4, step_delimiter="\x00", max_steps=4,
                           max_step_tokens=2).run("Hi", seed=0)
    assert plain.temperature_history == [1.0] * len(plain.temperature_history)


@pytest.mark.model
def test_a_search_repeats_with_its_seed(tiny_model):
    model, tok = tiny_model
    pf = EntropicParticleFilter(model, tok, reward=SelfCertainty(), n_particles=3, step_delimiter="e", max_steps=3,
                                max_step_tokens=4)
    first, again, other = pf.run("Hi", seed=5), pf.run("Hi", seed=5), pf.run("Hi", seed=6)
    assert [p.token_ids for p in first.particles] == [p.token_ids for p in again.particles]
    assert first.ess_history == again.ess_history and first.answer == again.answer
    assert [p.token_ids for p in first.particles] != [p.token_ids for p in other.particles]


@pytest.mark.model
def test_best_of_n_keeps_the_best_scored_and_self_consistency_the_majority(tiny_model):
    model, tok = tiny_model
    bon = BestOfN(model, tok, reward=lambda prompt, text: min(1.0, len(text) / 200), n=4, max_new_tokens=6).run("Hi", seed=0)
    lengths = [len(p.text) for p in bon.particles]
    assert len(bon.particles[bon.best].text) == max(lengths) and bon.answer == bon.particles[bon.best].text
    assert bon.tokens_generated == sum(len(p.token_ids) for p in bon.particles)
    sc = SelfConsistency(model, tok, n=5, max_new_tokens=4, extract=lambda text: text[:1] or None).run("Hi", seed=0)
    firsts = [p.text[:1] for p in sc.particles]
    winner = max(set(firsts), key=lambda c: (firsts.count(c), -firsts.index(c)))
    assert sc.answer[:1] == winner and sc.votes[winner] == firsts.count(winner)


@pytest.mark.model
@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_particles": 0}, ValueError, "`n_particles` must be an integer >= 1, got 0"),
    ({"max_steps": 1.5}, ValueError, "`max_steps` must be an integer >= 1"),
    ({"step_delimiter": ""}, ValueError, "`step_delimiter` must be a non-empty string"),
    ({"resampling": "stratified"}, ValueError, "`resampling` must be one of systematic, multinomial"),
    ({"softmax_temperature": 0}, ValueError, "`softmax_temperature` must be a finite number > 0"),
    ({"lookahead_weight": 2}, ValueError, r"`lookahead_weight` must be in \[0, 1\]"),
    ({"select": "median"}, ValueError, "`select` must be one of best, vote, weighted_vote"),
    ({"annealing": "linear"}, ValueError, "`annealing` must be one of ess, entropy, none"),
    ({"reward": 3}, TypeError, "`reward` must have a score"),
])
def test_particle_filter_rejects_bad_arguments(tiny_model, kwargs, error, message):
    model, tok = tiny_model
    options = {"reward": SelfCertainty(), **kwargs}
    with pytest.raises(error, match=message):
        ParticleFilter(model, tok, **options)


@pytest.mark.model
def test_a_prompt_too_long_for_the_context_is_refused(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="exceeds the model's context of 512 tokens"):
        ParticleFilter(model, tok, reward=SelfCertainty(), max_steps=4, max_step_tokens=100).run("word " * 150)


@pytest.mark.model
def test_the_sampler_drives_the_particles_and_votes_choose_the_answer(tiny_model):
    """Every token a particle holds is one the sampler kept (top-3 of the recomputed logits); with
    select="vote" the answer carries the most common extracted answer."""
    model, tok = tiny_model
    first_char = lambda text: text.strip()[:1] or None  # noqa: E731
    pf = ParticleFilter(model, tok, reward=SelfCertainty(), n_particles=6, sampler=[TopK(3)], step_delimiter="e",
                        max_steps=3, max_step_tokens=4, select="vote", extract=first_char)
    result = pf.run("Hi", seed=2)
    prompt = _prompt_ids(tok, "Hi")
    for trace in result.particles:
        ids = torch.tensor([prompt + trace.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1]
        top3 = logits.topk(3, dim=-1).indices
        assert all(t in top3[k].tolist() for k, t in enumerate(trace.token_ids))
    answers = [first_char(p.text) for p in result.particles]
    winner = max(result.votes, key=result.votes.get)
    assert first_char(result.answer) == winner and result.votes[winner] == answers.count(winner)
