"""Where entrodec keeps what it builds once: converted models and compiled kernels.

``$ENTRODEC_CACHE``, else ``$XDG_CACHE_HOME/entrodec``, else ``~/.cache/entrodec``. Compiled CPU kernels go
to ``numba/<hash of the kernel sources>`` below it: Numba's own cache checks only the file that defines
a function, not the functions it inlines, so a kernel built from older sources must never be found.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
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


def build_folder_once(target: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(folder)`` on a fresh folder beside ``target`` and rename it into place, so an
    interrupted build never leaves a half-written cache entry. Losing a race to another process that
    finished the same entry is fine (its ``config.json`` is there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        write(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
