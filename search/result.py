"""What a search returns: the chosen answer, every particle's history, and what the search cost."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class ParticleTrace:
    """One particle (a partial or finished answer).

    ``token_ids``, ``logprobs`` and ``entropies`` run over its generated tokens (log-probabilities and
    entropies in nats under the model's own distribution); ``step_starts[k]`` is where step ``k`` begins
    in them and ``step_texts[k]`` is that step's text. ``rewards[k]`` and ``weights[k]`` are the reward
    and the log-weight its lineage was resampled with after step ``k`` (a copy inherits its parent's
    history). ``finish_reason`` is ``None`` while it can still be extended, else ``"eos"``, ``"answer"``
    (``finish_pattern`` matched), ``"length"`` (``max_new_tokens``) or ``"max_steps"``.
    """

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    step_starts: list[int] = field(default_factory=list)
    step_texts: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def last_step(self) -> slice:
        """The token range of the latest step (the whole answer when it was not split into steps)."""
        return slice(self.step_starts[-1] if self.step_starts else 0, len(self.token_ids))

    def fork(self) -> ParticleTrace:
        """An independent copy: the two continue separately."""
        return replace(self, **{name: list(getattr(self, name)) for name in _LISTS})


_LISTS = ("token_ids", "logprobs", "entropies", "step_starts", "step_texts", "rewards", "weights")


@dataclass
class SearchResult:
    """The outcome of one search.

    ``answer`` is the chosen particle's text, ``best`` its index in ``particles`` (the final
    population). ``ess_history`` and ``temperature_history`` hold, per resampling, the effective sample
    size of the untempered weights and the annealing temperature used (1.0 when none). ``tokens_generated``
    counts every sampled token, those of particles later dropped and of look-ahead included;
    ``lookahead_tokens`` is the look-ahead's share. ``reused_prefix_tokens`` counts the tokens that forked
    particles took from their parent's KV cache instead of recomputing them. ``votes`` (self-consistency
    and vote-based choices) counts extracted answers.
    """

    answer: str
    best: int
    particles: list[ParticleTrace]
    ess_history: list[float] = field(default_factory=list)
    temperature_history: list[float] = field(default_factory=list)
    tokens_generated: int = 0
    lookahead_tokens: int = 0
    reused_prefix_tokens: int = 0
    reward_calls: int = 0
    steps: int = 0
    votes: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
