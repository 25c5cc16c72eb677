"""Every docstring example runs, and the README's Python snippets run."""

import doctest
import importlib
import pkgutil

import pytest

import entrodec.decoding


def _modules():
    yield entrodec.decoding
    for info in pkgutil.walk_packages(entrodec.decoding.__path__, "entrodec.decoding."):
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


def _readme_python_blocks() -> list[str]:
    text = README.read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


@pytest.mark.model
def test_readme_python_examples_run(default_model, monkeypatch, capsys):
    """The README's Python snippets run as written (with the default model already cached)."""
    blocks = _readme_python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip()
