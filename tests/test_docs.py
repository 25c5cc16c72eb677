"""Every docstring example runs, and the README's Python snippets run."""

import doctest
import importlib
import pkgutil

import pytest

import entrodec.decoding
import entrodec.search
import entrodec.serve
import entrodec.train

SERVER_URL = "http://127.0.0.1:8000/v1"  # what the README's client snippets talk to


def _modules():
    for package in (entrodec.decoding, entrodec.search, entrodec.serve, entrodec.train):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith(".cli"):
                yield importlib.import_module(info.name)


@pytest.mark.parametrize("module", list(_modules()), ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_processor_docstrings_have_examples():
    from entrodec.decoding import processors

    for name in processors.__all__:
        cls = getattr(processors, name)
        if name != "Truncation":
            assert ">>>" in (cls.__doc__ or ""), f"{name} has no runnable example"


README = __import__("pathlib").Path(__file__).resolve().parents[1] / "README.md"


def _readme_python_blocks(server: bool) -> list[str]:
    """The README's Python snippets: those that talk to a running server, or the others."""
    text = README.read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    return [block for block in blocks if (SERVER_URL in block) == server]


@pytest.mark.model
def test_readme_python_examples_run(default_model, monkeypatch, capsys):
    """The README's Python snippets run as written (with the default model already cached)."""
    blocks = _readme_python_blocks(server=False)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip()


@pytest.mark.model
def test_readme_client_examples_run_against_the_server(default_model, capsys):
    """The README's client snippets, pointed at a server on a free port serving the default model."""
    from serve_harness import running_server

    blocks = _readme_python_blocks(server=True)
    assert blocks
    with running_server(*default_model, name="SmolLM2-135M-Instruct") as (url, _):
        for block in blocks:
            exec(compile(block.replace(SERVER_URL, url + "/v1"), str(README), "exec"), {})
    assert capsys.readouterr().out.strip()
