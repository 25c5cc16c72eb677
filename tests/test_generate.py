"""generate(): parity with Hugging Face greedy decoding, seeds, stop rules, streaming, telemetry, errors."""

import math

import pytest
import torch

from entrodec.decoding import MinP, Temperature, TopH, generate
from entrodec.decoding.entropy import entropy

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a land far away, there lived a",
    "def fibonacci(n):",
]


def _hf_greedy(model, tokenizer, prompts, max_new_tokens):
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
    width = batch["input_ids"].shape[1]
    eos = model.generation_config.eos_token_id
    rows = []
    for row in out[:, width:].tolist():
        if eos in row:  # HF pads after EOS; ours stops the row there
            row = row[: row.index(eos) + 1]
        rows.append(row)
    return rows


@pytest.mark.model
def test_greedy_matches_hf_generate_single(default_model):
    model, tok = default_model
    for prompt in PROMPTS:
        ours = generate(model, tok, prompt, max_new_tokens=24)
        assert ours.token_ids == _hf_greedy(model, tok, [prompt], 24)


@pytest.mark.model
def test_greedy_matches_hf_generate_padded_batch(default_model):
    model, tok = default_model
    ours = generate(model, tok, PROMPTS, max_new_tokens=24)
    assert len({len(tok(p)["input_ids"]) for p in PROMPTS}) == 3  # really padded
    assert ours.token_ids == _hf_greedy(model, tok, PROMPTS, 24)


@pytest.mark.model
def test_default_model_answers_a_factual_question(default_model):
    model, tok = default_model
    out = generate(model, tok, "What is the capital of France?", chat=True, max_new_tokens=20)
    assert "Paris" in out.texts[0]
    assert out.finish_reasons == ["eos"]
    assert out.token_ids[0][-1] == tok.convert_tokens_to_ids("<|im_end|>")


def test_same_seed_same_text_in_any_batch(tiny_model):
    model, tok = tiny_model
    sampler = [Temperature(1.2), TopH(0.7)]
    alone = generate(model, tok, "hello there", sampler=sampler, max_new_tokens=20, seed=11, ignore_eos=True)
    batch = generate(model, tok, ["a much longer prompt that forces padding", "hello there", "x"],
                     sampler=sampler, max_new_tokens=20, seed=[5, 11, 6], ignore_eos=True)
    assert batch.token_ids[1] == alone.token_ids[0]
    assert batch.texts[1] == alone.texts[0]
    other = generate(model, tok, "hello there", sampler=sampler, max_new_tokens=20, seed=12, ignore_eos=True)
    assert other.token_ids[0] != alone.token_ids[0]


def test_seed_none_uses_torch_global_rng(tiny_model):
    model, tok = tiny_model
    torch.manual_seed(3)
    a = generate(model, tok, "hi", sampler=[Temperature(1.0)], max_new_tokens=8, ignore_eos=True)
    torch.manual_seed(3)
    b = generate(model, tok, "hi", sampler=[Temperature(1.0)], max_new_tokens=8, ignore_eos=True)
    assert a.token_ids == b.token_ids and a.seeds == b.seeds


def test_streaming_concatenates_to_the_text_and_never_splits_a_character(tiny_model):
    model, tok = tiny_model
    # a random model at high temperature emits byte-level tokens that only form characters in pairs
    stream = generate(model, tok, ["x", "y"], sampler=[Temperature(3.0)], max_new_tokens=60, seed=[0, 1],
                      stream=True, ignore_eos=True)
    pieces = {0: [], 1: []}
    for event in stream:
        pieces[event.row].append(event.text)
    result = stream.result
    for row in (0, 1):
        streamed = "".join(pieces[row])
        assert streamed == result.texts[row]
        assert streamed == tok.decode(result.token_ids[row], skip_special_tokens=True)
        assert all(not piece.endswith("\ufffd") or piece == streamed[-len(piece):] for piece in pieces[row])


def test_multibyte_characters_stream_whole(tiny_model):
    _, tok = tiny_model
    from entrodec.decoding.text_stream import IncrementalDetokenizer

    text = "naïve café — 東京 🌧️ rain"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) + detok.flush() == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(ids) > len(text.split())  # some characters really span several tokens


def test_stop_strings_cut_text_and_stop_each_row(tiny_model):
    model, tok = tiny_model
    free = generate(model, tok, ["a", "b"], sampler=[Temperature(1.0)], max_new_tokens=40, seed=[3, 4], ignore_eos=True)
    stop = free.texts[0][10:13]
    out = generate(model, tok, ["a", "b"], sampler=[Temperature(1.0)], max_new_tokens=40, seed=[3, 4],
                   stop=[stop], ignore_eos=True)
    cut = free.texts[0].find(stop)
    assert out.texts[0] == free.texts[0][:cut]
    assert out.finish_reasons[0] == "stop"
    assert len(out.token_ids[0]) < len(free.token_ids[0])
    if stop not in free.texts[1]:
        assert out.texts[1] == free.texts[1] and out.finish_reasons[1] == "length"
    # streaming never shows any part of the stop string
    stream = generate(model, tok, "a", sampler=[Temperature(1.0)], max_new_tokens=40, seed=3, stop=[stop],
                      stream=True, ignore_eos=True)
    assert "".join(e.text for e in stream) == out.texts[0]


@pytest.mark.model
def test_each_row_stops_on_its_own(default_model):
    model, tok = default_model
    out = generate(model, tok, ["Name three colors.", "What is 2 + 2?"], chat=True, max_new_tokens=30, stop="\n")
    assert out.texts[0] == "1. Red"
    assert out.finish_reasons[0] == "stop"
    assert out.finish_reasons[1] in ("eos", "stop")
    assert len(out.token_ids[0]) < 30


def test_length_and_ignore_eos(tiny_model):
    model, tok = tiny_model
    out = generate(model, tok, ["a", "bb"], sampler=[Temperature(1.0)], max_new_tokens=7, seed=0, ignore_eos=True)
    assert [len(ids) for ids in out.token_ids] == [7, 7]
    assert out.finish_reasons == ["length", "length"]
    assert out.tokens_per_second > 0


def test_telemetry(tiny_model):
    model, tok = tiny_model
    out = generate(model, tok, "abc", sampler=[Temperature(1.0), MinP(0.2)], max_new_tokens=5, seed=0, ignore_eos=True)
    t = out.telemetry[0]
    assert len(t.entropy_before) == len(t.kept) == len(t.logprob_after) == 5
    # the first step's "before" entropy is the model's own distribution on the prompt
    ids = torch.tensor([tok("abc")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[:, -1, :]
    assert math.isclose(t.entropy_before[0], float(entropy(logits)[0]), rel_tol=1e-4)
    kept_first = int(torch.isfinite(MinP(0.2)(None, logits)).sum())
    assert t.kept[0] == kept_first
    for before, after, lb, la in zip(t.entropy_before, t.entropy_after, t.logprob_before, t.logprob_after):
        assert after <= before + 1e-5 and lb <= la <= 0


def test_greedy_telemetry(tiny_model):
    model, tok = tiny_model
    t = generate(model, tok, "abc", max_new_tokens=4).telemetry[0]
    assert t.kept == [1] * len(t.kept) and t.entropy_after == [0.0] * len(t.kept)


def test_chat_messages(tiny_model):
    model, tok = tiny_model
    conversation = [{"role": "user", "content": "Hi"}]
    a = generate(model, tok, [conversation], max_new_tokens=3)
    b = generate(model, tok, "Hi", chat=True, max_new_tokens=3)
    assert a.token_ids == b.token_ids
    assert a.prompt_tokens[0] > 5  # the template added its turn markers


def test_preset_by_name(tiny_model):
    model, tok = tiny_model
    out = generate(model, tok, "abc", sampler="creative", max_new_tokens=3, seed=0, ignore_eos=True)
    assert len(out.token_ids[0]) == 3


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(prompts=[]), ValueError, "`prompts` is empty"),
    (dict(prompts=["a", 3]), TypeError, "prompt 1 must be a string or a non-empty list of chat messages"),
    (dict(max_new_tokens=0), ValueError, "`max_new_tokens` must be an integer >= 1, got 0"),
    (dict(sampler="nope"), ValueError, "unknown sampler preset 'nope'"),
    (dict(sampler=3.5), TypeError, "`sampler` must be None, a preset name"),
    (dict(stop=[""]), ValueError, "`stop` must be a non-empty string"),
    (dict(seed=[1, 2]), ValueError, "`seed` as a list needs one int per prompt (1)"),
    (dict(max_new_tokens=10_000), ValueError, "exceeds the model's context of 512 tokens"),
    (dict(prompts=""), ValueError, "prompt 0 is empty"),
])
def test_bad_input_is_reported_clearly(tiny_model, kwargs, error, message):
    model, tok = tiny_model
    args = dict(prompts="hello", max_new_tokens=2) | kwargs
    with pytest.raises(error) as raised:
        generate(model, tok, **args)
    assert message in str(raised.value)


def test_errors_raise_at_call_time_even_when_streaming(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError):
        generate(model, tok, [], stream=True)


def test_a_processor_that_removes_everything_is_named(tiny_model):
    model, tok = tiny_model

    def remove_all(input_ids, scores):
        return torch.full_like(scores, -math.inf)

    with pytest.raises(ValueError, match="the sampler removed every token of row 0; check its processors"):
        generate(model, tok, "hi", sampler=[remove_all], max_new_tokens=2, seed=0)


def test_temperature_telemetry(tiny_model):
    from entrodec.decoding import EntropyTemperature

    model, tok = tiny_model
    fixed = generate(model, tok, "abc", sampler=[Temperature(0.7), MinP(0.1)], max_new_tokens=4, seed=0, ignore_eos=True)
    assert fixed.telemetry[0].temperature == pytest.approx([0.7] * 4)
    assert generate(model, tok, "abc", max_new_tokens=3).telemetry[0].temperature == [0.0] * 3
    adaptive = EntropyTemperature(kind="edt", temperature=1.5, theta=0.5)
    out = generate(model, tok, ["abc", "a longer prompt"], sampler=[adaptive], max_new_tokens=4, seed=0, ignore_eos=True)
    for row in out.telemetry:
        expected = [1.5 * 0.8 ** (0.5 / h) for h in row.entropy_before]
        assert row.temperature == pytest.approx(expected, rel=1e-4)


def test_n_samples_share_the_prefill_and_equal_separate_runs(tiny_model):
    model, tok = tiny_model
    sampler = [Temperature(1.3), TopH(0.8)]
    out = generate(model, tok, ["hello there", "x"], sampler=sampler, max_new_tokens=12, seed=[5, 9], n=3, ignore_eos=True)
    assert len(out.texts) == 6 and out.seeds == [5, 6, 7, 9, 10, 11]
    for row, (prompt, seed) in enumerate([("hello there", s) for s in (5, 6, 7)] + [("x", s) for s in (9, 10, 11)]):
        alone = generate(model, tok, prompt, sampler=sampler, max_new_tokens=12, seed=seed, ignore_eos=True)
        assert out.token_ids[row] == alone.token_ids[0]
    assert len({tuple(ids) for ids in out.token_ids[:3]}) == 3  # the samples differ
    assert out.prompt_tokens[:3] == [len(tok("hello there")["input_ids"])] * 3
    with pytest.raises(ValueError, match="`n` must be an integer >= 1, got 0"):
        generate(model, tok, "hi", n=0)


def test_row_samplers_mix_samplers_in_one_batch_as_if_alone(tiny_model):
    from entrodec.decoding import RowSamplers

    model, tok = tiny_model
    hot = [Temperature(1.5), TopH(0.7)]
    cold = [Temperature(0.5), MinP(0.2)]
    rows = RowSamplers([hot, cold, None, hot])
    out = generate(model, tok, ["hi", "hello"], sampler=rows, n=2, seed=[3, 8], max_new_tokens=10, ignore_eos=True)
    for row, (prompt, sampler, seed) in enumerate([("hi", hot, 3), ("hi", cold, 4), ("hello", None, 8), ("hello", hot, 9)]):
        alone = generate(model, tok, prompt, sampler=sampler, seed=seed, max_new_tokens=10, ignore_eos=True)
        assert out.token_ids[row] == alone.token_ids[0], row
        assert out.telemetry[row].kept == alone.telemetry[0].kept
    with pytest.raises(ValueError, match="RowSamplers holds 4 samplers for 2 rows"):
        generate(model, tok, ["hi", "hello"], sampler=rows, max_new_tokens=2)


def test_finished_rows_leave_the_batch_without_changing_the_others(tiny_model):
    model, tok = tiny_model
    sampler = [Temperature(1.2), TopH(0.8)]
    prompts = ["a", "bb", "ccc"]
    full = generate(model, tok, prompts, sampler=sampler, seed=[1, 2, 3], max_new_tokens=16, ignore_eos=True)
    # a stop string taken from row 0's text ends it early; rows 1 and 2 must be unaffected
    stop = full.texts[0][2:5]
    cut = generate(model, tok, prompts, sampler=sampler, seed=[1, 2, 3], max_new_tokens=16, ignore_eos=True, stop=stop)
    assert cut.finish_reasons[0] == "stop" and len(cut.token_ids[0]) < 16
    for row in (1, 2):
        if stop not in full.texts[row]:
            assert cut.token_ids[row] == full.token_ids[row]
