"""A request's sampling fields → the sampler chain its rows are drawn with.

Each field builds one processor; ``samplers`` gives their order, else transformers' order
(temperature — or an entropy-adaptive temperature — first, then the truncations). ``sampler`` instead
names a shipped preset or spells a chain as in the YAML files, and excludes the per-field settings.
With no field at all the request samples at temperature 1 (the OpenAI default); ``temperature: 0``
is greedy.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable

from transformers import LogitsProcessor

from ..decoding import (EntropyTemperature, EpsilonCutoff, EtaCutoff, MinP, SamplerChain, Temperature, TopH, TopK,
                        TopNSigma, TopP, Typical, chain_from_config, load_preset)
from .errors import bad_request
from .schema import SAMPLER_FIELDS, Sampling

_ENTROPY_FIELDS = ("dynatemp_range", "dynatemp_exponent", "entropy_temperature", "edt_theta", "edt_base", "hapo_tau",
                   "hapo_pivot", "hapo_window")


_KIND_FIELDS = {"dynatemp": ("dynatemp_range", "dynatemp_exponent"), "edt": ("edt_theta", "edt_base"),
                "hapo": ("hapo_tau", "hapo_pivot", "hapo_window")}


def _temperature(req: Sampling) -> LogitsProcessor:
    t = 1.0 if req.temperature is None else req.temperature
    kind = req.entropy_temperature or ("dynatemp" if req.dynatemp_range is not None else None)
    for other, fields in _KIND_FIELDS.items():
        for name in fields:
            if other != kind and getattr(req, name) is not None:
                wanted = "`dynatemp_range`" if other == "dynatemp" else f"`entropy_temperature: {other}`"
                raise bad_request(f"`{name}` needs {wanted}", name)
    if kind is None:
        return Temperature(t)
    options = {
        "dynatemp": {"dynatemp_range": req.dynatemp_range, "dynatemp_exponent": req.dynatemp_exponent},
        "edt": {"theta": req.edt_theta, "base": req.edt_base},
        "hapo": {"tau": req.hapo_tau, "pivot": req.hapo_pivot, "window": req.hapo_window},
    }[kind]
    return EntropyTemperature(kind, temperature=t, **{k: v for k, v in options.items() if v is not None})


def _makers(req: Sampling) -> dict[str, Callable[[], LogitsProcessor | None]]:
    """One maker per field; a maker returns None when its field asks for nothing (e.g. top_k 0)."""
    return {
        "temperature": lambda: _temperature(req),
        "top_k": lambda: TopK(req.top_k) if req.top_k and req.top_k > 0 else None,
        "top_p": lambda: TopP(req.top_p) if req.top_p is not None and req.top_p < 1.0 else None,
        "min_p": lambda: MinP(req.min_p) if req.min_p else None,
        "typical_p": lambda: Typical(req.typical_p) if req.typical_p is not None and req.typical_p < 1.0 else None,
        "top_h": lambda: TopH(req.top_h, rule=req.top_h_rule or "paper") if req.top_h is not None else None,
        "epsilon_cutoff": lambda: EpsilonCutoff(req.epsilon_cutoff) if req.epsilon_cutoff is not None else None,
        "eta_cutoff": lambda: EtaCutoff(req.eta_cutoff) if req.eta_cutoff is not None else None,
        "top_n_sigma": lambda: TopNSigma(req.top_n_sigma) if req.top_n_sigma is not None else None,
    }


def _is_set(req: Sampling, name: str) -> bool:
    if name == "temperature":
        return req.temperature is not None or any(getattr(req, f) is not None for f in _ENTROPY_FIELDS)
    return getattr(req, name) is not None


def _named_chain(req: Sampling) -> SamplerChain:
    given = [name for name in (*SAMPLER_FIELDS, *_ENTROPY_FIELDS, "samplers", "top_h_rule")
             if getattr(req, name) is not None]
    if given:
        raise bad_request(f"`sampler` cannot be combined with {', '.join(given)}", "sampler")
    try:
        if isinstance(req.sampler, str):
            return load_preset(req.sampler)
        return chain_from_config(req.sampler, "`sampler`")
    except ValueError as error:
        raise bad_request(str(error), "sampler", "invalid_value") from None


def sampler_for(req: Sampling) -> SamplerChain | None:
    """The chain for ``req`` (``None`` for greedy). Out-of-range values are 400s naming their field."""
    if req.sampler is not None:
        return _named_chain(req)
    if req.top_h_rule is not None and req.top_h is None:
        raise bad_request("`top_h_rule` needs `top_h`", "top_h_rule")
    makers = _makers(req)
    order = req.samplers or list(SAMPLER_FIELDS)
    if req.samplers is not None:
        missing = [name for name in SAMPLER_FIELDS if name not in order and _is_set(req, name)]
        if missing:
            raise bad_request(f"`samplers` leaves out {', '.join(missing)}, which the request sets", "samplers")
    if req.temperature == 0.0:
        _temperature(req)  # still refuse settings that do not belong together
        return None
    processors = []
    for name in order:
        try:
            processor = makers[name]()
        except ValueError as error:
            raise bad_request(f"`{name}`: {error}", name, "invalid_value") from None
        if processor is not None:
            processors.append(processor)
    return SamplerChain(processors)


_CHAIN_FIELDS = (*SAMPLER_FIELDS, *_ENTROPY_FIELDS, "samplers", "top_h_rule", "sampler")


class SharedSamplers:
    """Requests with the same sampler settings share one chain object, so the engine draws all their
    rows in one call per step (rows are grouped by chain). Chains with per-row state (HAPO's entropy
    windows) are never shared. Holds at most ``size`` chains, least recently used dropped first."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._chains: OrderedDict[str, SamplerChain | None] = OrderedDict()

    def __call__(self, req: Sampling) -> SamplerChain | None:
        key = json.dumps({name: getattr(req, name) for name in _CHAIN_FIELDS}, sort_keys=True)
        if key in self._chains:
            self._chains.move_to_end(key)
            return self._chains[key]
        chain = sampler_for(req)
        if chain is None or not any(hasattr(p, "select_rows") for p in chain):
            self._chains[key] = chain
            if len(self._chains) > self.size:
                self._chains.popitem(last=False)
        return chain
