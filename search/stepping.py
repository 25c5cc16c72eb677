"""Advancing particles by one reasoning step, all of them in one batch.

A step is the text up to ``delimiter`` (once the step holds something other than whitespace and
delimiters) or ``max_step_tokens`` tokens. Particles run in lockstep, one token per forward pass;
a particle whose step is complete is parked (its rows moved out of the running batch, so it costs no
more forward passes), and when every particle is done the parked rows are concatenated back and fed
their last token in one batched forward. Finished particles (EOS, ``finish_pattern``, the token limit)
leave for good. Processors with per-row rolling state (EntropyTemperature's windows) restart them at
every step, because resampling reorders and copies rows between steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..decoding.chain import SamplerChain
from ..decoding.continuation import check_drawable
from ..decoding.decode_batch import DecodeBatch
from ..decoding.draw import as_seed_tensor
from ..decoding.generate import draw_step
from ..decoding.processors import Temperature
from ..decoding.sampler_spec import SamplerSpec
from ..decoding.text_stream import IncrementalDetokenizer
from .result import ParticleTrace


def step_complete(text: str, delimiter: str) -> bool:
    """Whether ``text`` holds ``delimiter`` after some content (a step that opens with the delimiter,
    e.g. a blank line, is not over yet).

    >>> step_complete("\\n\\n", "\\n\\n"), step_complete("3 + 4 = 7\\n\\n", "\\n\\n")
    (False, True)
    """
    at = text.find(delimiter)
    while at != -1:
        if text[:at].replace(delimiter, "").strip():
            return True
        at = text.find(delimiter, at + 1)
    return False


def search_sampler(sampler: SamplerSpec) -> SamplerSpec:
    """The sampler a search draws with: ``sampler``, or the model's own distribution (temperature 1)
    when it is ``None`` (greedy would make every particle the same)."""
    return [Temperature(1.0)] if sampler is None else sampler


def particle_seed(seed: int, step: int, particle: int) -> int:
    """The draw seed of ``particle`` in ``step``: copies made by resampling get different seeds, so they
    continue differently; the same search seed repeats the same search."""
    return hash((seed, step, particle)) & (2**62 - 1)


@dataclass(frozen=True)
class StepRules:
    """What ends a step, and what ends a particle."""

    delimiter: str
    max_step_tokens: int
    max_new_tokens: int | None
    eos: frozenset[int]
    finish_pattern: re.Pattern | None


@dataclass
class _Parked:
    batch: DecodeBatch
    rows: list[int]
    pending: list[int]


class StepDecoder:
    """Generates one step for every live particle of a batch (see the module docstring)."""

    def __init__(self, tokenizer, rules: StepRules) -> None:
        self.tokenizer = tokenizer
        self.rules = rules

    def step(
        self, batch: DecodeBatch, rows: Sequence[int], traces: Sequence[ParticleTrace], sampler: SamplerChain | None,
        seeds: Sequence[int], feed_last: bool = True,
    ) -> tuple[DecodeBatch, list[int], int]:
        """Extend ``traces[rows[k]]`` (batch row ``k``) by one step each.

        ``seeds[k]`` keys row ``k``'s draws. Returns the batch of the particles that can continue, the
        particle index of each of its rows, and the number of tokens generated. With ``feed_last`` the
        step's last tokens are fed, so the returned batch's logits predict the next step; without it
        (look-ahead, which is thrown away) they are not.
        """
        rows, seeds = list(rows), list(seeds)
        for processor in sampler or ():  # rolling windows (EntropyTemperature) restart with each step
            if hasattr(processor, "reset"):
                processor.reset()
        detokenizers = {p: IncrementalDetokenizer(self.tokenizer) for p in rows}
        texts = {p: "" for p in rows}
        for p in rows:
            traces[p].step_starts.append(len(traces[p].token_ids))
        parked: list[_Parked] = []
        generated = 0
        for t in range(self.rules.max_step_tokens):
            with torch.inference_mode():
                tokens, telemetry = draw_step(sampler, batch.sequences, batch.logits, as_seed_tensor(seeds, len(seeds), batch.device), t)
            check_drawable(telemetry, rows)
            chosen = tokens.tolist()
            generated += len(chosen)
            done, continuing = [], []
            for k, p in enumerate(rows):
                trace = traces[p]
                trace.token_ids.append(chosen[k])
                trace.logprobs.append(float(telemetry.logprob_before[k]))
                trace.entropies.append(float(telemetry.entropy_before[k]))
                if chosen[k] in self.rules.eos:
                    trace.finish_reason = "eos"
                else:
                    texts[p] += detokenizers[p].push(chosen[k])
                if self.rules.max_new_tokens is not None and len(trace.token_ids) >= self.rules.max_new_tokens and not trace.finished:
                    trace.finish_reason = "length"
                over = trace.finished or t == self.rules.max_step_tokens - 1 or step_complete(texts[p], self.rules.delimiter)
                (done if over else continuing).append(k)
            if done:
                self._close(done, rows, traces, texts, detokenizers)
                live = [k for k in done if not traces[rows[k]].finished]
                if live:
                    parked.append(_Parked(batch.copy(live), [rows[k] for k in live], [chosen[k] for k in live]))
                batch.select(continuing)
                if sampler is not None:
                    sampler.select_rows(continuing)
            rows, seeds = [rows[k] for k in continuing], [seeds[k] for k in continuing]
            if not rows:
                break
            batch.advance([chosen[k] for k in continuing])
        return self._reassemble(batch, parked, feed_last) + (generated,)

    def _close(self, done, rows, traces, texts, detokenizers) -> None:
        """Record the finished step of rows ``done``; a particle whose text now matches the finish
        pattern is finished."""
        for k in done:
            p = rows[k]
            text = texts[p] + detokenizers[p].flush()
            trace = traces[p]
            trace.step_texts.append(text)
            trace.text += text
            pattern = self.rules.finish_pattern
            if not trace.finished and pattern is not None and pattern.search(trace.text):
                trace.finish_reason = "answer"

    def _reassemble(self, batch: DecodeBatch, parked: list[_Parked], feed_last: bool) -> tuple[DecodeBatch, list[int]]:
        merged = DecodeBatch(batch.model, batch.pad_id)
        rows, pending = [], []
        for part in parked:
            merged.extend(part.batch)
            rows += part.rows
            pending += part.pending
        if feed_last and rows:
            merged.advance(pending)
        return merged, rows
