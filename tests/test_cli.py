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
