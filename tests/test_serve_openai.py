"""The server driven by the real `openai` client: every answer checked against generate() on the same model."""

import json
import threading

import httpx
import openai
import pytest

from entrodec.decoding import MinP, SamplerChain, Temperature, TopH, TopK, generate, load_preset
from serve_harness import running_server

pytestmark = pytest.mark.model
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(tiny_model):
    model, tok = tiny_model
    with running_server(model, tok, max_batch=8, max_queue=8) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["test-model"]
    health = httpx.get(server[0] + "/health").json()
    assert health["status"] == "ok" and health["max_batch"] == 8


def test_chat_greedy_matches_generate(client, tiny_model):
    model, tok = tiny_model
    reply = client.chat.completions.create(model="test-model", messages=QUESTION, max_tokens=12, temperature=0)
    expected = generate(model, tok, [QUESTION], max_new_tokens=12, ignore_eos=False)
    assert reply.choices[0].message.content == expected.texts[0]
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens == len(expected.token_ids[0])
    assert reply.usage.prompt_tokens == expected.prompt_tokens[0]
    assert reply.choices[0].finish_reason == {"eos": "stop", "stop": "stop", "length": "length"}[expected.finish_reasons[0]]


def test_completion_with_extensions_matches_generate(client, tiny_model):
    model, tok = tiny_model
    reply = client.completions.create(
        model="test-model", prompt="Once upon a time", max_tokens=10, temperature=1.3, seed=11,
        extra_body={"top_k": 50, "min_p": 0.02},
    )
    chain = SamplerChain([Temperature(1.3), TopK(50), MinP(0.02)])  # transformers' order, as documented
    expected = generate(model, tok, "Once upon a time", sampler=chain, max_new_tokens=10, seed=11)
    assert reply.choices[0].text == expected.texts[0]


def test_n2_and_seed_reproduce_generate(client, tiny_model):
    model, tok = tiny_model
    ask = dict(model="test-model", messages=QUESTION, max_tokens=10, temperature=1.5, n=2, seed=5,
               extra_body={"top_h": 0.4, "top_h_rule": "hf"})
    first, again = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1]
    expected = generate(model, tok, [QUESTION], sampler=[Temperature(1.5), TopH(0.4, rule="hf")], n=2, seed=5,
                        max_new_tokens=10)
    assert texts == expected.texts
    other = client.chat.completions.create(**{**ask, "seed": 6})
    assert [c.message.content for c in other.choices] != texts


def test_preset_and_samplers_order(client, tiny_model):
    model, tok = tiny_model
    reply = client.chat.completions.create(model="test-model", messages=QUESTION, max_tokens=8, seed=2,
                                           extra_body={"sampler": "llama"})
    expected = generate(model, tok, [QUESTION], sampler=load_preset("llama"), max_new_tokens=8, seed=2)
    assert reply.choices[0].message.content == expected.texts[0]
    # llama.cpp's order through `samplers`: truncate first, temperature last
    reply = client.chat.completions.create(model="test-model", messages=QUESTION, max_tokens=8, seed=2, temperature=2.0,
                                           extra_body={"min_p": 0.05, "samplers": ["min_p", "temperature"]})
    expected = generate(model, tok, [QUESTION], sampler=[MinP(0.05), Temperature(2.0)], max_new_tokens=8, seed=2)
    assert reply.choices[0].message.content == expected.texts[0]


def test_logprobs_and_entropy_telemetry(client, tiny_model):
    model, tok = tiny_model
    reply = client.chat.completions.create(
        model="test-model", messages=QUESTION, max_tokens=6, temperature=1.0, seed=3, logprobs=True, top_logprobs=3,
        extra_body={"top_h": 0.5, "telemetry": True},
    )
    entries = reply.choices[0].logprobs.content
    expected = generate(model, tok, [QUESTION], sampler=[Temperature(1.0), TopH(0.5)], max_new_tokens=6, seed=3)
    tel = expected.telemetry[0]
    assert len(entries) == len(tel.kept)
    for k, entry in enumerate(entries):
        extra = entry.model_extra
        assert entry.logprob == pytest.approx(tel.logprob_before[k], abs=1e-4)
        assert extra["entropy"] == pytest.approx(tel.entropy_before[k], abs=1e-4)
        assert extra["entropy_after"] == pytest.approx(tel.entropy_after[k], abs=1e-4)
        assert extra["kept"] == tel.kept[k]
        assert len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True) and entry.logprob <= tops[0] + 1e-6
    # without the extension, logprobs carry the standard fields only
    plain = client.chat.completions.create(model="test-model", messages=QUESTION, max_tokens=3, temperature=0,
                                           logprobs=True)
    assert not plain.choices[0].logprobs.content[0].model_extra
    legacy = client.completions.create(model="test-model", prompt="Hi", max_tokens=3, temperature=0, logprobs=2)
    assert len(legacy.choices[0].logprobs.tokens) == 3 and len(legacy.choices[0].logprobs.top_logprobs[0]) == 2


def test_stream_chunks_follow_openai_format(client, server):
    ask = dict(model="test-model", messages=QUESTION, max_tokens=9, temperature=0.8, seed=4, n=2)
    whole = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    finished = {}
    for chunk in chunks[:-1]:
        assert chunk.object == "chat.completion.chunk" and chunk.usage is None and len(chunk.choices) == 1
        choice = chunk.choices[0]
        assert choice.index not in finished  # nothing after a choice's finish_reason
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert finished == {c.index: c.finish_reason for c in whole.choices}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    with httpx.stream("POST", server[0] + "/v1/completions",
                      json={"prompt": "Hello", "max_tokens": 4, "stream": True, "temperature": 0}) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    pieces = [json.loads(line[6:]) for line in lines[:-1]]
    assert {p["object"] for p in pieces} == {"text_completion"}


def test_stop_strings(client, tiny_model):
    model, tok = tiny_model
    free = client.completions.create(model="test-model", prompt="The", max_tokens=12, temperature=0).choices[0].text
    stop = free[3:5] if len(free.strip()) >= 5 else None
    if stop is None:
        pytest.skip("the greedy continuation is too short to cut")
    reply = client.completions.create(model="test-model", prompt="The", max_tokens=12, temperature=0, stop=[stop])
    assert reply.choices[0].text == free[: free.find(stop)] and reply.choices[0].finish_reason == "stop"


def test_concurrent_requests_are_batched_and_each_keeps_its_settings(client, server, tiny_model):
    model, tok = tiny_model
    engine = server[1].state.server.engine
    from entrodec.decoding import TopP

    # (request fields, extension fields, the chain generate() needs for the same text, seed, n)
    cases = [
        (dict(temperature=0), {}, None, 0, 1),
        (dict(temperature=1.5, seed=1), {"top_h": 0.4}, [Temperature(1.5), TopH(0.4)], 1, 1),
        (dict(temperature=1.0, seed=2), {"min_p": 0.1}, [Temperature(1.0), MinP(0.1)], 2, 1),
        (dict(temperature=0.7, seed=3, top_p=0.9), {}, [Temperature(0.7), TopP(0.9)], 3, 1),
        (dict(temperature=1.2, seed=4, n=3), {"top_k": 20}, [Temperature(1.2), TopK(20)], 4, 3),
    ]
    results = [None] * len(cases)
    steps_before = engine.steps
    barrier = threading.Barrier(len(cases))

    def ask(i):
        fields, extra = cases[i][:2]
        barrier.wait()
        results[i] = client.chat.completions.create(model="test-model", messages=QUESTION, max_tokens=24,
                                                    extra_body={"ignore_eos": True, **extra}, **fields)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total_tokens = sum(r.usage.completion_tokens for r in results)
    assert total_tokens == 24 * 7
    assert engine.steps - steps_before < total_tokens / 2  # rows shared steps
    for i, (reply, (_, _, chain, seed, n)) in enumerate(zip(results, cases)):
        expected = generate(model, tok, [QUESTION], sampler=chain, n=n, seed=seed, max_new_tokens=24, ignore_eos=True)
        assert [c.message.content for c in reply.choices] == expected.texts, f"request {i}"
