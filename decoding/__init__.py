"""entrodec.decoding: logits processors, sampler chains, generate() and model loading.

>>> from entrodec.decoding import load_model, generate, Temperature, TopH   # doctest: +SKIP
>>> model, tok = load_model()                                               # doctest: +SKIP
>>> generate(model, tok, "Write a haiku about rain.", chat=True,
...          sampler=[Temperature(1.5), TopH(alpha=0.4)], seed=0).texts[0]  # doctest: +SKIP
"""

from .chain import SamplerChain
from .draft import make_draft
from .entropy import entropy
from .generate import GenerationStream, generate
from .loading import ModelNotFoundError, load_model
from .presets import available_presets, chain_from_config, chain_from_yaml, load_preset
from .processors import EntropyTemperature, EpsilonCutoff, EtaCutoff, MinP, Temperature, TopH, TopK, TopNSigma, TopP, Typical
from .result import GenerationResult, RowSwitching, RowTelemetry, StreamEvent
from .row_samplers import RowSamplers
from .switch import ModelSwitch

__all__ = [
    "load_model", "ModelNotFoundError", "generate", "GenerationStream", "GenerationResult", "RowTelemetry", "RowSwitching",
    "StreamEvent", "SamplerChain", "RowSamplers", "Temperature", "TopK", "TopP", "MinP", "Typical", "EpsilonCutoff",
    "EtaCutoff", "TopNSigma", "TopH", "EntropyTemperature", "available_presets", "load_preset", "chain_from_config",
    "chain_from_yaml", "entropy", "ModelSwitch", "make_draft",
]
