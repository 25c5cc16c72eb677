"""entrodec.kernels: Numba CPU and Numba-CUDA kernels for the sampling hot path.

A sampler chain whose every link has a kernel runs as one fused pass per decoding step: the processors,
the draw (an exponential race keyed by seed and step) and the per-token telemetry. Processors and
:class:`~entrodec.decoding.SamplerChain` use the kernels automatically for CPU tensors and, where
Numba-CUDA works, CUDA tensors; their plain torch code stays the reference the kernels are tested
against. To force the torch reference::

    import entrodec.kernels
    entrodec.kernels.set_enabled(False)          # everywhere, or
    with entrodec.kernels.use_kernels(False):    # for a block
        ...

or set ``ENTRODEC_KERNELS=0`` in the environment before starting Python.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .launch import backend_for, cuda_available, run_program

_enabled = os.environ.get("ENTRODEC_KERNELS", "1").strip().lower() not in ("0", "false", "off", "no")


def enabled() -> bool:
    """Whether processors and chains may use the kernels."""
    return _enabled


def set_enabled(flag: bool) -> None:
    """Allow (``True``) or forbid (``False``) the kernels everywhere."""
    global _enabled
    _enabled = bool(flag)


@contextlib.contextmanager
def use_kernels(flag: bool) -> Iterator[None]:
    """Allow or forbid the kernels inside a ``with`` block."""
    previous = _enabled
    set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)


__all__ = ["enabled", "set_enabled", "use_kernels", "backend_for", "cuda_available", "run_program"]
