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
    (["generate", "x", "--switch-threshold", "2"], "--switch-window, --switch-dwell and --switch-entropy-of need --switch SMALL"),
    (["generate", "x", "--switch", "draft:eight", "--switch-threshold", "2"], "a draft is written draft:LAYERS or draft:LAYERS:DISTILL_TOKENS"),
    (["generate", "x", "--switch", "draft:8"], "--switch needs --switch-threshold BITS"),
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


@pytest.mark.model
def test_generate_with_model_switching_reports_the_split(default_model, capsys):
    argv = ["generate", "What is the capital of France?", "--switch", "draft:12", "--switch-threshold", "1.0",
            "--switch-window", "2", "--switch-dwell", "2", "--max-new-tokens", "12", "--stats"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "of tokens from the large model, estimated cost" in err


def test_preset_switch_section_is_checked():
    from entrodec.decoding.switch_spec import check_switch_config

    with pytest.raises(ValueError, match="unknown `switch` key\\(s\\) treshold; known: small, threshold_bits"):
        check_switch_config({"small": "draft:8", "threshold_bits": 2, "treshold": 1}, "my.yaml")
    with pytest.raises(ValueError, match="my.yaml: `switch` needs `threshold_bits`"):
        check_switch_config({"small": "draft:8"}, "my.yaml")


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


@pytest.mark.parametrize("argv, message", [
    (["search", "x", "--reward", "nonsense"], "--reward must be self-certainty, self-certainty-entropy, MODULE:FUNCTION or prm:PATH"),
    (["search", "x", "--top-p", "2"], "`top_p` must be in [0, 1], got 2"),
])
def test_search_bad_flags_exit_2_before_loading(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model_folder(tiny_model, tmp_path_factory):
    model, tok = tiny_model
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.model
def test_search_with_a_python_verifier_prints_the_result_and_progress(tiny_model_folder, tmp_path, monkeypatch, capsys):
    import json

    (tmp_path / "my_checks.py").write_text("def score(prompt, text):\n    return min(1.0, len(text) / 50)\n")
    monkeypatch.chdir(tmp_path)
    argv = ["search", "Hello", "--model", str(tiny_model_folder), "--reward", "my_checks:score", "--particles", "3",
            "--max-steps", "3", "--max-step-tokens", "4", "--step-delimiter", "e", "--temperature", "0.8", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["particles"]) == 3 and result["answer"] == result["particles"][result["best"]]["text"]
    assert len(result["ess_history"]) == len(result["temperature_history"]) >= 1
    assert "[step 1/3] " in captured.err
    assert main(argv[:5] + ["my_checks:nothing"] + argv[6:]) == 2
    assert "my_checks has no callable 'nothing'" in capsys.readouterr().err


@pytest.mark.model
def test_search_self_consistency_reports_votes(tiny_model_folder, capsys):
    argv = ["search", "Hello", "--model", str(tiny_model_folder), "--method", "self-consistency", "--particles", "3",
            "--max-new-tokens", "4", "--seed", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and "[self-consistency: " in captured.err
