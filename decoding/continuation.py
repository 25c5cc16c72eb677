"""One row's continuation as it is decoded: tokens, visible text (stop strings cut, broken characters
held back), telemetry and finish reason; and the end-of-sequence facts every decoding loop needs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .result import RowTelemetry
from .telemetry import StepTelemetry
from .text_stream import IncrementalDetokenizer, find_stop, held_back

_FLOAT_FIELDS = ("entropy_before", "entropy_after", "logprob_before", "logprob_after", "temperature")


class Continuation:
    """Book-keeping of one row: its tokens, text, telemetry and whether it is done.

    ``finish_reason`` becomes ``"eos"``, ``"stop"`` (a stop string appeared: it is cut, with everything
    after it) or ``"length"`` (the row's token limit).
    """

    def __init__(self, tokenizer, stops: Sequence[str]) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.token_ids: list[int] = []
        self.stops = stops
        self.text = ""
        self.emitted = 0
        self.telemetry = RowTelemetry()
        self.finish_reason: str | None = None

    def add(self, token: int, step: StepTelemetry, index: int, is_eos: bool, at_limit: bool) -> str:
        """Record one token (row ``index`` of ``step``) and return the text that may now be shown."""
        self.token_ids.append(token)
        for name in _FLOAT_FIELDS:
            getattr(self.telemetry, name).append(float(getattr(step, name)[index]))
        self.telemetry.kept.append(int(step.kept[index]))
        if not is_eos:
            self._extend(self.detokenizer.push(token))
        if self.finish_reason is None and (is_eos or at_limit):
            self.finish_reason = "eos" if is_eos else "length"
            self._extend(self.detokenizer.flush())  # an incomplete character held back at the very end
        visible = len(self.text) if self.finish_reason else len(self.text) - held_back(self.text, self.stops)
        new = self.text[self.emitted:visible]
        self.emitted = max(self.emitted, visible)
        return new

    def _extend(self, piece: str) -> None:
        searched_from = len(self.text)
        self.text += piece
        if self.stops and self.finish_reason != "stop":
            at = find_stop(self.text, self.stops, searched_from)
            if at != -1:
                self.text = self.text[:at]
                self.finish_reason = "stop"


def eos_ids(model, tokenizer) -> set[int]:
    """The end-of-sequence ids of the model's generation config and of the tokenizer."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return ids


def pad_id(tokenizer, eos: set[int]) -> int:
    """The id that fills left padding (never attended to): the tokenizer's pad token, else an EOS id."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return min(eos) if eos else 0


def check_drawable(telemetry: StepTelemetry, rows: Sequence[object]) -> None:
    """Raise if a sampler removed every token of a row (its drawn token has probability zero)."""
    for k, row in enumerate(rows):
        if not math.isfinite(telemetry.logprob_after[k]):
            raise ValueError(f"the sampler removed every token of row {row}; check its processors")
