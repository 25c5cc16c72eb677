"""What generate() returns: texts, token ids, finish reasons and per-token telemetry."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RowTelemetry:
    """Per generated token of one row, in order (nats for entropies and log-probabilities).

    ``temperature`` is the product of the temperatures the chain applied to the token (entropy-adaptive
    ones included): 1.0 for a chain without temperature, 0.0 for greedy decoding."""

    entropy_before: list[float] = field(default_factory=list)
    entropy_after: list[float] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    logprob_before: list[float] = field(default_factory=list)
    logprob_after: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)


@dataclass
class GenerationResult:
    """The outcome of one ``generate()`` call, one entry per prompt.

    ``finish_reasons`` are ``"eos"`` (the model ended its turn), ``"stop"`` (a stop string appeared; it is
    cut from the text but its tokens stay in ``token_ids``) or ``"length"`` (``max_new_tokens`` reached).
    """

    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[str]
    telemetry: list[RowTelemetry]
    prompt_tokens: list[int]
    seeds: list[int]
    elapsed_s: float

    @property
    def entropies(self) -> list[list[float]]:
        """Entropy (nats) of the model's own next-token distribution at each generated token."""
        return [row.entropy_before for row in self.telemetry]

    @property
    def generated_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else float("inf")


@dataclass(frozen=True)
class StreamEvent:
    """One piece of streamed output: ``text`` is new text for ``row`` (possibly empty while a multi-byte
    character or a possible stop string is pending); ``finish_reason`` is set on the row's last event."""

    row: int
    text: str
    token_id: int | None
    finish_reason: str | None = None
