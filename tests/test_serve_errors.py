"""Bad input of every kind gets a 4xx with the OpenAI error body naming the parameter; never a 5xx."""

import json
import time
from contextlib import contextmanager

import httpx
import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from serve_harness import running_server

pytestmark = pytest.mark.model
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def server(tiny_model):
    model, tok = tiny_model
    with running_server(model, tok, max_batch=4, max_queue=2, max_tokens_cap=16, max_prompt_tokens=64,
                        max_body_bytes=20_000) as (url, app):
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def _error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


@pytest.mark.parametrize("change, param", [
    ({"temperature": -1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": "2"}, "n"),
    ({"n": 5}, "n"),  # more rows than the server's batch
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 17}, "max_tokens"),  # over --max-tokens-cap
    ({"seed": 2**70}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": ""}, "stop"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"best_of": 2}, "best_of"),
    ({"mystery": 1}, "mystery"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, None),
    ({"top_h": 1.5}, "top_h"),
    ({"top_h_rule": "hf"}, "top_h_rule"),
    ({"top_h": 0.4, "top_h_rule": "other"}, "top_h_rule"),
    ({"min_p": 2}, "min_p"),
    ({"top_k": -2}, "top_k"),
    ({"edt_theta": 0.2}, "edt_theta"),
    ({"entropy_temperature": "hapo", "edt_base": 0.5}, "edt_base"),
    ({"sampler": "no-such-preset"}, "sampler"),
    ({"sampler": "creative", "top_p": 0.9}, "sampler"),
    ({"sampler": [{"top_h": 7}]}, "sampler"),
    ({"samplers": ["temperature", "bogus"]}, "samplers"),
    ({"samplers": ["top_p"], "min_p": 0.1}, "samplers"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_parameters_are_400_naming_the_parameter(server, change, param):
    _error(httpx.post(server + "/v1/chat/completions", json={**CHAT, **change}), 400, param)


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}], top_p=7)
    assert bad.value.body["param"] == "top_p"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"top_h": 0})
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("body", [b'{"prompt": "\\ud800 x"}', b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
                                  b"{", b"not json", b"[1, 2]", b'"text"', b"", b'{"n": NaN}', b"[" * 50_00 + b"]" * 50_00])
def test_malformed_bodies_are_400(server, body):
    response = httpx.post(server + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    _error(response, 413 if len(body) > 20_000 else 400)


def test_completion_prompt_forms(server):
    for prompt, status in [([], 400), ([[]], 400), ([1, 2, 3], 200), ([[5, 6], "text"], 400), ([[5, 6], [7]], 200), (["a", "b"], 200), ([10**9], 400), (7, 400),
                           ("\ud800 lone surrogate", 400), (["x"] * 5, 400)]:  # 5 prompts > the batch of 4
        body = json.dumps({"prompt": prompt, "max_tokens": 2, "temperature": 0})  # escapes lone surrogates
        response = httpx.post(server + "/v1/completions", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (prompt, response.text)
        if status == 200:
            assert len(response.json()["choices"]) == (1 if all(isinstance(t, int) for t in prompt) else len(prompt))


def test_size_caps(server):
    too_long = {**CHAT, "messages": [{"role": "user", "content": "word " * 200}]}
    _error(httpx.post(server + "/v1/chat/completions", json=too_long), 413, "messages")
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 30_000}]}
    _error(httpx.post(server + "/v1/chat/completions", json=huge), 413)


def test_unknown_routes_and_methods_answer_openai_errors(server):
    _error(httpx.get(server + "/v1/nothing"), 404)
    _error(httpx.get(server + "/v1/chat/completions"), 405)


def test_api_key(tiny_model):
    model, tok = tiny_model
    with running_server(model, tok, api_key="s3cret") as (url, _):
        _error(httpx.post(url + "/v1/chat/completions", json=CHAT), 401)
        _error(httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        _error(httpx.post(url + "/v1/chat/completions", content=b"{", headers={"Authorization": "Basic s3cret"}), 401)
        assert httpx.get(url + "/health").status_code == 200  # for load balancers, as in vLLM
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(**{**CHAT, "temperature": 0}).choices[0].message.content is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def _wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@contextmanager
def slowed(model, seconds=0.01):
    """Every forward pass of ``model`` takes at least ``seconds``, so a request is surely still running
    while the test acts."""
    handle = model.register_forward_pre_hook(lambda module, args: time.sleep(seconds))
    try:
        yield model
    finally:
        handle.remove()


def test_full_queue_answers_429_at_once_and_disconnect_frees_the_slot(tiny_model):
    model, tok = tiny_model
    long_run = {**CHAT, "max_tokens": 400, "stream": True, "ignore_eos": True}
    with slowed(model), running_server(model, tok, max_batch=1, max_queue=0) as (url, app):
        engine = app.state.server.engine
        with httpx.stream("POST", url + "/v1/chat/completions", json=long_run) as stream:
            lines = stream.iter_lines()
            next(lines)  # the request is running
            started = time.monotonic()
            _error(httpx.post(url + "/v1/chat/completions", json=CHAT), 429)
            assert time.monotonic() - started < 5
        # the client left mid-stream: its row leaves the batch and the next request runs
        _wait_for(lambda: engine.load()["running_rows"] == 0)
        assert engine.steps < 200  # it left long before its 400 tokens
        assert httpx.post(url + "/v1/chat/completions", json=CHAT).status_code == 200


def test_non_streaming_client_that_leaves_frees_its_slot(tiny_model):
    model, tok = tiny_model
    with slowed(model), running_server(model, tok, max_batch=1, max_queue=0) as (url, app):
        engine = app.state.server.engine
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", json={**CHAT, "max_tokens": 400, "ignore_eos": True}, timeout=0.3)
        _wait_for(lambda: engine.load()["running_rows"] == 0)
        assert engine.steps < 200


# --- fuzzing the request schema --------------------------------------------------------------------
FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "seed",
          "stop", "stream", "stream_options", "logprobs", "top_logprobs", "echo", "top_k", "min_p", "typical_p",
          "top_h", "top_h_rule", "dynatemp_range", "dynatemp_exponent", "entropy_temperature", "edt_theta",
          "edt_base", "hapo_tau", "hapo_pivot", "hapo_window", "epsilon_cutoff", "eta_cutoff", "top_n_sigma",
          "samplers", "sampler", "telemetry", "ignore_eos", "presence_penalty", "user", "unknown_field"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 30), st.integers(), st.floats(-3, 3), st.floats(allow_nan=False),
    st.sampled_from(["", "paper", "hf", "edt", "hapo", "dynatemp", "creative", "temperature", "min_p", "test-model", "\x00"]),
    st.text(max_size=8),
    st.text(st.characters(categories=["Cs", "Cc", "Lo", "So"]), max_size=4),  # lone surrogates, controls, CJK, emoji
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["role", "content", "type", "text", "include_usage", "top_h", "x"]), inner, max_size=3),
), max_leaves=8)
# JSON can spell lone surrogates ("\ud800"): draw them often, with controls, CJK and emoji
any_text = st.one_of(st.text(max_size=20), st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
                     st.text(st.characters(categories=["Cc", "Lo", "So"]), max_size=6))
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "developer"]),
                                 "content": any_text})
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=7).flatmap(
    lambda extra: st.fixed_dictionaries({"messages": st.lists(message, min_size=1, max_size=3),
                                         "prompt": any_text}).map(lambda base: {**base, **extra})
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, chat=st.booleans(), drop=st.sampled_from([None, "messages", "prompt"]))
@example(body={"prompt": "\ud800"}, chat=False, drop=None)  # once a 500: the tokenizer cannot encode it
@example(body={"messages": [{"role": "user", "content": "\udfff"}]}, chat=True, drop=None)
def test_fuzzed_requests_never_get_5xx(server, body, chat, drop):
    body = dict(body)
    body.pop("prompt" if chat else "messages", None)
    if drop:
        body.pop(drop, None)
    body["max_tokens"] = body.get("max_tokens") if not isinstance(body.get("max_tokens"), int) else min(body["max_tokens"], 4)
    path = "/v1/chat/completions" if chat else "/v1/completions"
    response = httpx.post(server + path, content=json.dumps(body), headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
