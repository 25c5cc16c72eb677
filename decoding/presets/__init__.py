"""Sampler chains written in YAML, and the named presets that ship with entrodec.

A chain is a list of one-key mappings, applied in order; a scalar is the processor's first argument::

    description: heat first, then keep an entropy-bounded set
    chain:
      - temperature: 1.5
      - top_h: {alpha: 0.4, rule: paper}

A preset may also turn on model switching with a ``switch:`` section (see ``entrodec.decoding.switch_spec``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from transformers import LogitsProcessor

from ..chain import SamplerChain
from ..switch_spec import check_switch_config
from ..processors import EntropyTemperature, EpsilonCutoff, EtaCutoff, MinP, Temperature, TopH, TopK, TopNSigma, TopP, Typical

PROCESSORS: dict[str, type[LogitsProcessor]] = {
    "temperature": Temperature,
    "top_k": TopK,
    "top_p": TopP,
    "min_p": MinP,
    "typical": Typical,
    "epsilon": EpsilonCutoff,
    "eta": EtaCutoff,
    "top_n_sigma": TopNSigma,
    "top_h": TopH,
    "entropy_temperature": EntropyTemperature,
}


def available_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files(__package__)
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def chain_from_config(entries: Any, source: str = "sampler config") -> SamplerChain:
    """Build a chain from a list of one-key mappings such as ``[{"temperature": 1.5}, {"top_h": 0.4}]``."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: `chain` must be a non-empty list of processors")
    processors = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"{source}: chain entry {position} must be a mapping with one key, got {entry!r}")
        (name, args), = entry.items()
        if name not in PROCESSORS:
            raise ValueError(f"{source}: unknown processor {name!r}; known: {', '.join(sorted(PROCESSORS))}")
        cls = PROCESSORS[name]
        try:
            processors.append(cls(**args) if isinstance(args, dict) else cls(args))
        except TypeError as error:
            raise ValueError(f"{source}: chain entry {position} ({name}): {error}") from None
    return SamplerChain(processors)


def chain_from_yaml(text_or_path: str | Path) -> SamplerChain:
    """Build a chain from YAML text or a ``.yaml`` file holding a ``chain:`` list."""
    if isinstance(text_or_path, Path) or str(text_or_path).endswith((".yaml", ".yml")):
        path = Path(text_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"sampler YAML file {str(path)!r} does not exist")
        text, source = path.read_text(), str(path)
    else:
        text, source = str(text_or_path), "YAML"
    document = yaml.safe_load(text)
    entries = document.get("chain") if isinstance(document, dict) else document
    return chain_from_config(entries, source)


def load_preset(name: str) -> SamplerChain:
    """The shipped preset ``name`` (see :func:`available_presets`) as a chain."""
    names = available_presets()
    if name not in names:
        raise ValueError(f"unknown sampler preset {name!r}; available presets: {', '.join(names)}")
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
    return chain_from_config(yaml.safe_load(text)["chain"], f"preset {name!r}")


def preset_switch(name: str) -> dict[str, Any] | None:
    """The preset's ``switch:`` section (model switching settings, checked), or ``None``."""
    if name not in available_presets():
        raise ValueError(f"unknown sampler preset {name!r}; available presets: {', '.join(available_presets())}")
    document = yaml.safe_load(resources.files(__package__).joinpath(f"{name}.yaml").read_text())
    section = document.get("switch")
    return None if section is None else check_switch_config(section, f"preset {name!r}")


def preset_description(name: str) -> str:
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
    return str(yaml.safe_load(text).get("description", ""))
