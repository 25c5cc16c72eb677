"""A training run's configuration: YAML sections checked key by key, and the shipped presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..decoding.checks import at_least, in_range, one_of
from .objective import AGGREGATIONS

BEHAVIOUR_MODES = ("truncated-is", "recompute", "ignore")


@dataclass
class RolloutConfig:
    prompts_per_step: int = 4
    group_size: int = 8
    max_new_tokens: int = 32
    hapo_from_previous: bool = True  # HAPO processors take their statistics from the previous rollout batch

    def check(self) -> None:
        at_least("rollout.prompts_per_step", self.prompts_per_step, 1)
        at_least("rollout.group_size", self.group_size, 2)
        at_least("rollout.max_new_tokens", self.max_new_tokens, 1)


@dataclass
class LossConfig:
    eps_low: float = 0.2
    eps_high: float = 0.2
    kl_coef: float = 0.0
    aggregation: str = "token-mean"

    def check(self) -> None:
        in_range("loss.eps_low", self.eps_low, 0.0, 1.0)
        in_range("loss.eps_high", self.eps_high, 0.0)
        in_range("loss.kl_coef", self.kl_coef, 0.0)
        one_of("loss.aggregation", self.aggregation, AGGREGATIONS)


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: int = 1
    mini_batches: int = 1
    grad_accum: int = 1

    def check(self) -> None:
        in_range("optim.lr", self.lr, 0.0, open_low=True)
        in_range("optim.weight_decay", self.weight_decay, 0.0)
        in_range("optim.max_grad_norm", self.max_grad_norm, 0.0, open_low=True)
        at_least("optim.epochs", self.epochs, 1)
        at_least("optim.mini_batches", self.mini_batches, 1)
        at_least("optim.grad_accum", self.grad_accum, 1)


@dataclass
class BehaviourConfig:
    """How the loss accounts for rollouts drawn from the processed distribution (see the README)."""

    mode: str = "truncated-is"
    cap: float = 2.0

    def check(self) -> None:
        one_of("behaviour.mode", self.mode, BEHAVIOUR_MODES)
        in_range("behaviour.cap", self.cap, 0.0, open_low=True)


@dataclass
class TrainConfig:
    """Everything a run needs. ``model``: ``"default"`` (SmolLM2-135M-Instruct), ``"tiny-random"`` (a
    2-layer random-weight model with the default tokenizer, for smoke tests) or a local model path.
    ``task``: ``{name: arithmetic, ...}`` or ``{prompts: FILE.jsonl, reward: MODULE:FUNCTION}``.
    ``sampler``: a sampler preset name or a chain (``[{temperature: 1.0}, {top_h: 0.4}]``).
    ``entropy_control``: ``{method: clip-cov, ...}`` (see :mod:`entrodec.train.entropy_control`)."""

    model: str = "default"
    task: dict[str, Any] = field(default_factory=lambda: {"name": "arithmetic"})
    sampler: Any = field(default_factory=lambda: [{"temperature": 1.0}])
    steps: int = 20
    seed: int = 0
    checkpoint_every: int = 5
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    entropy_control: dict[str, Any] = field(default_factory=lambda: {"method": "none"})

    def check(self) -> "TrainConfig":
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"`model` must be 'default', 'tiny-random' or a model path, got {self.model!r}")
        if not isinstance(self.task, dict):
            raise ValueError(f"`task` must be a mapping such as {{name: arithmetic}}, got {self.task!r}")
        if not isinstance(self.entropy_control, dict) or "method" not in self.entropy_control:
            raise ValueError(f"`entropy_control` must be a mapping with a `method`, got {self.entropy_control!r}")
        at_least("steps", self.steps, 1)
        at_least("checkpoint_every", self.checkpoint_every, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}")
        for section in (self.rollout, self.loss, self.optim, self.behaviour):
            section.check()
        return self

    @property
    def updates_per_rollout(self) -> int:
        return self.optim.epochs * self.optim.mini_batches

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"rollout": RolloutConfig, "loss": LossConfig, "optim": OptimConfig, "behaviour": BehaviourConfig}


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """A checked :class:`TrainConfig` from a mapping; unknown keys are errors, not silently ignored."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a training config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = dict(data)
    for name, cls in _SECTIONS.items():
        if name in values:
            values[name] = _section(cls, values[name], f"{source}: {name}")
    try:
        return TrainConfig(**values).check()
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def _section(cls: type, data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ValueError(f"{source}.{name} must be a {type(default).__name__}, got {value!r}")
        values[name] = value
    return cls(**values)


def load_config(path: str | Path) -> TrainConfig:
    """A config from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {str(path)!r} does not exist")
    return config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


def available_presets() -> list[str]:
    folder = resources.files("entrodec.train").joinpath("presets")
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_preset(name: str) -> TrainConfig:
    """A shipped training preset (``tiny``: a smoke test in under a minute on CPU; ``demo``: the default
    model on the arithmetic task)."""
    names = available_presets()
    if name not in names:
        raise ValueError(f"unknown training preset {name!r}; available: {', '.join(names)}")
    text = resources.files("entrodec.train").joinpath("presets", f"{name}.yaml").read_text()
    return config_from_dict(yaml.safe_load(text), f"training preset {name!r}")
