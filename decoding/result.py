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
class RowSwitching:
    """What model switching did for one row (``generate(..., switch=ModelSwitch(...))``).

    ``models`` and ``rolling_entropy_bits`` have one entry per generated token: the model whose logits
    it was drawn from (``"small"`` or ``"large"``) and the rolling mean entropy (bits) the rule compared
    after it. The per-model counters are ``positions`` (next-token distributions computed for the row:
    the prompt's end and every generated token fed), ``catch_up_tokens`` (tokens fed that were
    written while the model was inactive) and ``passes`` (forward passes that held the row);
    ``parameters`` are the models' parameter counts.
    """

    models: list[str] = field(default_factory=list)
    rolling_entropy_bits: list[float] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=lambda: {"small": 0, "large": 0})
    catch_up_tokens: dict[str, int] = field(default_factory=lambda: {"small": 0, "large": 0})
    passes: dict[str, int] = field(default_factory=lambda: {"small": 0, "large": 0})
    parameters: dict[str, int] = field(default_factory=lambda: {"small": 0, "large": 0})

    @property
    def large_fraction(self) -> float:
        """Share of the row's tokens drawn from the large model's logits."""
        return self.models.count("large") / len(self.models) if self.models else 0.0

    def weighted(self, counter: str) -> float:
        """Parameter-weighted ``positions`` or ``passes``: ``Σ_m P_m · count_m``."""
        counts = getattr(self, counter)
        return float(sum(self.parameters[m] * counts[m] for m in counts))

    @property
    def cost(self) -> float:
        """Estimated compute relative to the large model alone, catch-up included:
        ``Σ_m P_m · positions_m / (P_large · tokens)`` (the large model alone computes one position per token)."""
        return self.weighted("positions") / (self.parameters["large"] * len(self.models)) if self.models else 0.0

    @property
    def cost_passes(self) -> float:
        """The same per forward pass instead of per position: decoding at small batch reads the weights
        once per pass, however many catch-up tokens the pass holds."""
        return self.weighted("passes") / (self.parameters["large"] * len(self.models)) if self.models else 0.0


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
    switching: list[RowSwitching] | None = None

    @property
    def entropies(self) -> list[list[float]]:
        """Entropy (nats) of the model's own next-token distribution at each generated token."""
        return [row.entropy_before for row in self.telemetry]

    @property
    def generated_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)

    def switch_summary(self) -> dict[str, float] | None:
        """Model switching over all rows (``None`` without ``switch=``): ``large_fraction`` of the tokens,
        ``cost`` and ``cost_passes`` relative to the large model alone, and ``catch_up_tokens`` per model."""
        if self.switching is None:
            return None
        rows = self.switching
        tokens = sum(len(r.models) for r in rows)
        big = rows[0].parameters["large"] * tokens if rows else 0
        return {
            "large_fraction": sum(r.models.count("large") for r in rows) / tokens if tokens else 0.0,
            "cost": sum(r.weighted("positions") for r in rows) / big if big else 0.0,
            "cost_passes": sum(r.weighted("passes") for r in rows) / big if big else 0.0,
            "catch_up_small": sum(r.catch_up_tokens["small"] for r in rows),
            "catch_up_large": sum(r.catch_up_tokens["large"] for r in rows),
        }

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
