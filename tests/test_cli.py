"""The `entrodec` command line."""

import subprocess
import sys

import pytest

from entrodec.decoding.cli import build_parser, chain_from_flags, main


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for option in ["--model", "--temperature", "--top-h", "--top-h-rule", "--min-p", "--top-p", "--top-k",
                   "--preset", "--seed", "--max-new-tokens", "--order", "--stop", "--raw"]:
        assert option in text


def test_flags_build_chain_in_order():
    args = build_parser().parse_args(["generate", "x", "--temperature", "1.5", "--top-h", "0.4", "--min-p", "0.1"])
    assert [type(p).__name__ for p in chain_from_flags(args)] == ["Temperature", "TopH", "MinP"]
    args = build_parser().parse_args(["generate", "x", "--temperature", "1.5", "--top-h", "0.4", "--order", "llama"])
    assert [type(p).__name__ for p in chain_from_flags(args)] == ["TopH", "Temperature"]
    assert chain_from_flags(build_parser().parse_args(["generate", "x"])) is None


@pytest.mark.parametrize("argv, message", [
    (["generate", "x", "--top-h", "1.5"], "`alpha` must be in (0, 1], got 1.5"),
    (["generate", "x", "--temperature", "-1"], "`temperature` must be in [0, inf], got -1"),
    (["generate", "x", "--preset", "nope"], "unknown sampler preset 'nope'"),
    (["generate", "x", "--preset", "creative", "--top-k", "5"], "--preset cannot be combined with --top-k"),
])
def test_bad_flags_exit_2_with_message(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    assert "creative" in capsys.readouterr().out


@pytest.mark.model
def test_generate_streams_with_default_model(default_model):
    out = subprocess.run(
        [sys.executable, "-m", "entrodec.decoding.cli", "generate", "What is the capital of France?",
         "--top-h", "0.4", "--temperature", "0.3", "--seed", "0", "--max-new-tokens", "16", "--stats"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout
    assert "tok/s" in out.stderr


def test_serve_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for option in ["--model", "--host", "--port", "--api-key", "--max-batch", "--max-queue", "--max-tokens-cap",
                   "--max-prompt-tokens"]:
        assert option in text
    assert "127.0.0.1" in text


@pytest.mark.parametrize("argv, message", [
    (["serve", "--max-batch", "0"], "--max-batch must be >= 1, got 0"),
    (["serve", "--max-queue", "-1"], "--max-queue must be >= 0, got -1"),
    (["serve", "--port", "0"], "--port must be >= 1, got 0"),
])
def test_bad_serve_flags_exit_2_before_loading_anything(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.model
def test_serve_command_answers_on_loopback(default_model):
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "entrodec.decoding.cli", "serve", "--port", str(port), "--api-key", "k"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, process.stdout.read()[-2000:]
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 12, "temperature": 0}
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 401
        reply = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}, timeout=120)
        assert "Paris" in reply.json()["choices"][0]["message"]["content"]
    finally:
        process.terminate()
        process.wait(timeout=30)
