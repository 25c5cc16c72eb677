"""The forms a user may give for a sampler, resolved to one SamplerChain (or None for greedy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from transformers import LogitsProcessor

from .chain import SamplerChain
from .presets import load_preset
from .row_samplers import RowSamplers

SamplerSpec = Union[None, str, SamplerChain, RowSamplers, LogitsProcessor, Sequence[LogitsProcessor]]


def resolve_sampler(sampler: SamplerSpec) -> SamplerChain | RowSamplers | None:
    """``None`` → greedy (``None``); a preset name → that preset; a processor or a list of them → a chain;
    a chain or :class:`RowSamplers` as it is."""
    if sampler is None or isinstance(sampler, (SamplerChain, RowSamplers)):
        return sampler
    if isinstance(sampler, str):
        return load_preset(sampler)
    if isinstance(sampler, LogitsProcessor):
        return SamplerChain([sampler])
    if isinstance(sampler, (list, tuple)):
        return SamplerChain(sampler)
    raise TypeError(
        f"`sampler` must be None, a preset name, a SamplerChain, RowSamplers, a logits processor or a list of them; "
        f"got {type(sampler).__name__}"
    )
