"""Reward sources for search, behind one small protocol.

A reward scores partial or finished answers: ``score(prompt, particles) -> list[float]``, one number
in [0, 1] per particle (higher is better). Three sources ship:

- :class:`StepVerifier`: a Python callable ``reward(prompt, partial_answer) -> float`` (an outcome or
  step checker, a heuristic, a remote judge);
- :class:`ProcessRewardModel`: a Hugging Face model with a sequence- or token-classification head;
- :class:`SelfCertainty`: the policy's own confidence in the latest step, for when there is no reward
  model.

Anything with a ``score`` method works; a bare callable is wrapped as a :class:`StepVerifier`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from ..decoding.prompts import Prompt
from .result import ParticleTrace


@runtime_checkable
class Reward(Protocol):
    def score(self, prompt: Prompt, particles: Sequence[ParticleTrace]) -> list[float]:
        """One reward in [0, 1] per particle."""


def _checked(value, source: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{source} must return a number in [0, 1], got {value!r}")
    return float(value)


class StepVerifier:
    """Wraps ``reward(prompt, partial_answer) -> float in [0, 1]`` (the particle's text so far).

    Example:
        >>> from entrodec.search import StepVerifier, ParticleTrace
        >>> StepVerifier(lambda prompt, text: 1.0 if "7" in text else 0.0).score("3 + 4?", [ParticleTrace(text="3 + 4 = 7")])
        [1.0]
    """

    def __init__(self, reward: Callable[[Prompt, str], float]) -> None:
        if not callable(reward):
            raise TypeError(f"`reward` must be callable as reward(prompt, partial_answer), got {type(reward).__name__}")
        self.reward = reward
        self.name = getattr(reward, "__name__", type(reward).__name__)

    def score(self, prompt: Prompt, particles: Sequence[ParticleTrace]) -> list[float]:
        return [_checked(self.reward(prompt, p.text), f"the reward callable {self.name}") for p in particles]


class SelfCertainty:
    """The policy's confidence in each particle's latest step, from the log-probabilities and entropies
    recorded while generating it (no extra forward pass).

    ``measure="logprob"``: ``exp(mean log p(token))``, the geometric-mean probability of the step's
    tokens under the model's own distribution. ``measure="entropy"``: ``exp(−mean H)``, 1 when every
    next-token distribution of the step was a point mass.

    Example:
        >>> from entrodec.search import SelfCertainty, ParticleTrace
        >>> trace = ParticleTrace(token_ids=[5, 6], logprobs=[-0.5, -1.5], entropies=[1.0, 1.0], step_starts=[0])
        >>> [round(r, 4) for r in SelfCertainty().score("", [trace])]
        [0.3679]
    """

    MEASURES = ("logprob", "entropy")

    def __init__(self, measure: str = "logprob") -> None:
        if measure not in self.MEASURES:
            raise ValueError(f"`measure` must be one of {', '.join(self.MEASURES)}, got {measure!r}")
        self.measure = measure

    def score(self, prompt: Prompt, particles: Sequence[ParticleTrace]) -> list[float]:
        scores = []
        for p in particles:
            values = (p.logprobs if self.measure == "logprob" else p.entropies)[p.last_step()]
            if not values:
                scores.append(0.5)
                continue
            mean = sum(values) / len(values)
            scores.append(math.exp(mean if self.measure == "logprob" else -mean))
        return scores


def _prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text: a string as it is, a conversation's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


class ProcessRewardModel:
    """A Hugging Face process reward model: the probability of ``positive_label`` from a classification
    head (a single-logit head is read through a sigmoid).

    ``head="sequence"`` (``AutoModelForSequenceClassification``): the whole partial answer gets one
    score. ``head="token"`` (``AutoModelForTokenClassification``): ``step_token`` is appended after every
    step and each step is scored at its marker; ``aggregate`` (``last``, ``min``, ``mean``, ``prod``)
    combines the steps. ``template(prompt_text, steps) -> str`` builds the model's input (default: the
    prompt, a newline, then the steps, each followed by ``step_token`` when there is one).

    Example:
        >>> from transformers import AutoModelForSequenceClassification, AutoTokenizer      # doctest: +SKIP
        >>> prm = ProcessRewardModel(AutoModelForSequenceClassification.from_pretrained(PATH),
        ...                          AutoTokenizer.from_pretrained(PATH))                  # doctest: +SKIP
    """

    HEADS = ("sequence", "token")
    AGGREGATES = ("last", "min", "mean", "prod")

    def __init__(
        self, model, tokenizer, head: str = "sequence", positive_label: int = 1, step_token: str | None = None,
        aggregate: str = "last", template: Callable[[str, list[str]], str] | None = None, batch_size: int = 8,
    ) -> None:
        if head not in self.HEADS:
            raise ValueError(f"`head` must be one of {', '.join(self.HEADS)}, got {head!r}")
        if aggregate not in self.AGGREGATES:
            raise ValueError(f"`aggregate` must be one of {', '.join(self.AGGREGATES)}, got {aggregate!r}")
        labels = getattr(model.config, "num_labels", 1)
        if labels > 1 and not 0 <= positive_label < labels:
            raise ValueError(f"`positive_label` must be in [0, {labels - 1}] for this {labels}-label head, got {positive_label}")
        if head == "token":
            if not step_token:
                raise ValueError("a token-classification PRM needs `step_token`, the marker placed after each step")
            marker = tokenizer.encode(step_token, add_special_tokens=False)
            if len(marker) != 1:
                raise ValueError(f"`step_token` {step_token!r} must be a single token of the PRM's tokenizer; it is {len(marker)}")
            self.step_token_id = marker[0]
        positive_int("batch_size", batch_size)
        self.model, self.tokenizer, self.head = model, tokenizer, head
        self.positive_label, self.step_token, self.aggregate = positive_label, step_token, aggregate
        self.template = template or self._default_template
        # Sequence heads pool the last non-pad token, which needs a pad id to find it in a padded batch.
        self.batch_size = batch_size if model.config.pad_token_id is not None or head == "token" else 1
        self.device = next(model.parameters()).device

    def _default_template(self, prompt: str, steps: list[str]) -> str:
        marker = self.step_token or ""
        return prompt + "\n" + "".join(step.strip() + marker if marker else step for step in steps)

    def _probability(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[-1] == 1:
            return torch.sigmoid(logits[..., 0])
        return torch.softmax(logits, dim=-1)[..., self.positive_label]

    def _combine(self, step_scores: torch.Tensor) -> float:
        if step_scores.numel() == 0:
            raise ValueError(f"the PRM input holds no {self.step_token!r} marker to score; check `template`")
        return float({"last": lambda s: s[-1], "min": torch.min, "mean": torch.mean, "prod": torch.prod}[self.aggregate](step_scores))

    @torch.inference_mode()
    def score(self, prompt: Prompt, particles: Sequence[ParticleTrace]) -> list[float]:
        texts = [self.template(_prompt_text(prompt), p.step_texts or [p.text]) for p in particles]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.model(**enc).logits
            if self.head == "sequence":
                scores += self._probability(logits).tolist()
                continue
            probabilities = self._probability(logits)
            for row in range(logits.shape[0]):
                at = (enc["input_ids"][row] == self.step_token_id) & enc["attention_mask"][row].bool()
                scores.append(self._combine(probabilities[row][at]))
        return [_checked(s, "the process reward model") for s in scores]


def score_all(reward: Reward, prompt: Prompt, particles: Sequence[ParticleTrace]) -> list[float]:
    """``reward.score(prompt, particles)``, checked to hold one score per particle."""
    scores = list(reward.score(prompt, particles))
    if len(scores) != len(particles):
        raise ValueError(f"the reward returned {len(scores)} scores for {len(particles)} particles")
    return scores


def positive_int(name: str, value) -> int:
    """``value`` if it is an integer >= 1, else a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    return value


def as_reward(reward) -> Reward:
    """``reward`` as a :class:`Reward`: an object with ``score`` as it is, a callable as a StepVerifier."""
    if isinstance(reward, Reward):
        return reward
    if callable(reward):
        return StepVerifier(reward)
    raise TypeError(f"`reward` must have a score(prompt, particles) method or be callable, got {type(reward).__name__}")
