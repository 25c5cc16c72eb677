"""The logits processors: each a ``transformers.LogitsProcessor`` in plain torch, the reference that
kernels are tested against."""

from .base import Truncation
from .cutoff import EpsilonCutoff, EtaCutoff
from .entropy_temperature import EntropyTemperature
from .min_p import MinP
from .temperature import Temperature
from .top_h import TopH
from .top_k import TopK
from .top_n_sigma import TopNSigma
from .top_p import TopP
from .typical import Typical

__all__ = ["Truncation", "Temperature", "TopK", "TopP", "MinP", "Typical", "EpsilonCutoff", "EtaCutoff",
           "TopNSigma", "TopH", "EntropyTemperature"]
