"""Compile plain-Python kernel modules for one backend.

The sampling rules (``rules``), the counter-based generator (``rng``) and the per-row algorithm
(``row_program``) are written once as plain functions. :func:`instantiate` clones every function of the
given modules into one shared namespace, adds a backend's passes, and wraps each clone with that
backend's decorator, so that names resolve to the backend's compiled functions. Clones keep their
module and qualified name, which keeps Numba's on-disk cache working for the CPU backend.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any


def instantiate(modules: Iterable[types.ModuleType], decorate: Callable[[Callable], Any]) -> dict[str, Any]:
    """Clone and decorate every public function defined in ``modules``; return the shared namespace."""
    modules = list(modules)
    namespace: dict[str, Any] = {}
    for module in modules:
        namespace.update(vars(module))
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__ and not name.startswith("_"):
                clone = types.FunctionType(value.__code__, namespace, name, value.__defaults__, value.__closure__)
                clone.__module__ = value.__module__
                clone.__qualname__ = value.__qualname__
                clone.__doc__ = value.__doc__
                namespace[name] = decorate(clone)
    return namespace
