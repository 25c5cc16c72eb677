"""Python callables named on a command line or in a config as ``MODULE:FUNCTION``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import ``FUNCTION`` from ``MODULE`` (modules in the working directory included, as with
    ``python -m``); errors name ``what`` (e.g. ``"--reward"``) and say what is wrong."""
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise ValueError(f"{what} must be written MODULE:FUNCTION, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{what} {spec}: cannot import {module_name!r} ({error})") from None
    target = getattr(module, function, None)
    if not callable(target):
        raise ValueError(f"{what} {spec}: {module_name} has no callable {function!r}")
    return target
