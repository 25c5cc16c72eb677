"""Where entrodec keeps what it builds once: converted models and compiled kernels.

``$ENTRODEC_CACHE``, else ``$XDG_CACHE_HOME/entrodec``, else ``~/.cache/entrodec``. Compiled CPU kernels go
to ``numba/<hash of the kernel sources>`` below it: Numba's own cache checks only the file that defines
a function, not the functions it inlines, so a kernel built from older sources must never be found.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import numba


def cache_dir() -> Path:
    if os.environ.get("ENTRODEC_CACHE"):
        return Path(os.environ["ENTRODEC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "entrodec"


def kernel_cache_dir(modules: Iterable[ModuleType]) -> Path:
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    digest.update(numba.__version__.encode())
    return cache_dir() / "numba" / digest.hexdigest()[:16]


@contextlib.contextmanager
def numba_cache_in(path: Path) -> Iterator[None]:
    """Functions decorated with ``cache=True`` inside this block keep their compiled code in ``path``."""
    previous = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(path)
    try:
        yield
    finally:
        numba.config.CACHE_DIR = previous
