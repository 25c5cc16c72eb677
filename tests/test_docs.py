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
