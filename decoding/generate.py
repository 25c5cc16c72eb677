"""generate(): batched decoding with a KV cache, a sampler chain, stop rules, seeds and streaming."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .chain import SamplerChain
from .draw import as_seed_tensor
from .fused import Draw, greedy_draw
from .prompts import Prompt, encode_prompt, left_pad, normalise_prompts, position_ids
from .result import GenerationResult, RowTelemetry, StreamEvent
from .row_samplers import RowSamplers
from .sampler_spec import SamplerSpec, resolve_sampler
from .telemetry import StepTelemetry
from .text_stream import IncrementalDetokenizer, find_stop, held_back


class _Row:
    """Book-keeping of one prompt's continuation: its tokens, text, telemetry and whether it is done."""

    def __init__(self, tokenizer, stops: Sequence[str]) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.token_ids: list[int] = []
        self.stops = stops
        self.text = ""
        self.emitted = 0
        self.telemetry = RowTelemetry()
        self.finish_reason: str | None = None

    def add(self, token: int, step: StepTelemetry, index: int, is_eos: bool, at_limit: bool) -> str:
        """Record one token and return the text that may now be shown."""
        self.token_ids.append(token)
        for name in ("entropy_before", "entropy_after", "logprob_before", "logprob_after", "temperature"):
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
        """Append decoded text; a stop string ends the row and is cut, with everything after it."""
        searched_from = len(self.text)
        self.text += piece
        if self.stops and self.finish_reason != "stop":
            at = find_stop(self.text, self.stops, searched_from)
            if at != -1:
                self.text = self.text[:at]
                self.finish_reason = "stop"


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return ids


def _check_stop(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or s == "":
            raise ValueError(f"`stop` must be a non-empty string or a list of them, got {s!r}")
    return stops


def _check_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    if seed is None:
        return torch.randint(0, 2**62, (batch,)).tolist()
    if isinstance(seed, bool):
        raise TypeError("`seed` must be an int, a list of ints, or None")
    if isinstance(seed, int):
        return [seed] * batch
    seeds = list(seed)
    if len(seeds) != batch or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"`seed` as a list needs one int per prompt ({batch}), got {seed!r}")
    return seeds


class GenerationStream:
    """Iterator of :class:`StreamEvent`; after it is exhausted, ``.result`` holds the full result."""

    def __init__(self, events: Iterator[StreamEvent | GenerationResult]) -> None:
        self._events = events
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[StreamEvent]:
        for item in self._events:
            if isinstance(item, GenerationResult):
                self.result = item
            else:
                yield item


def generate(
    model,
    tokenizer,
    prompts: Prompt | Sequence[Prompt],
    sampler: SamplerSpec = None,
    max_new_tokens: int = 256,
    stop: str | Sequence[str] | None = None,
    seed: int | Sequence[int] | None = None,
    stream: bool = False,
    chat: bool = False,
    ignore_eos: bool = False,
    n: int = 1,
) -> GenerationResult | GenerationStream:
    """Generate continuations for a batch of prompts.

    Args:
        model: a causal LM (``transformers`` ``PreTrainedModel``), e.g. from :func:`load_model`.
        tokenizer: its tokenizer.
        prompts: a string, a chat conversation (list of ``{"role", "content"}``), or a list of those.
            Conversations go through the tokenizer's chat template; strings are raw text unless ``chat``.
        sampler: ``None`` (greedy), a list of processors, a :class:`SamplerChain`, a preset name such
            as ``"creative"``, or :class:`RowSamplers` (one sampler per row, ``len(prompts) · n`` of them).
        max_new_tokens: at most this many new tokens per prompt (``>= 1``).
        stop: string(s) that end a row when they appear; they are cut from the text.
        seed: an int for every prompt, one int per prompt, or ``None`` (drawn from torch's global RNG). A
            row's text depends only on its prompt and seed, never on the rest of the batch. With ``n > 1``
            the ``j``-th sample of a prompt uses its seed ``+ j``.
        stream: return a :class:`GenerationStream` of incremental text instead of the final result.
        chat: wrap string prompts as a user message and apply the chat template.
        ignore_eos: keep generating past end-of-sequence tokens (for benchmarks).
        n: samples per prompt. Each prompt is run through the model once and its cache shared by its
            samples; the result has ``len(prompts) · n`` rows, the samples of each prompt together.

    Example:
        >>> from entrodec.decoding import load_model, generate, Temperature, TopH  # doctest: +SKIP
        >>> model, tok = load_model()                                              # doctest: +SKIP
        >>> out = generate(model, tok, ["Write a haiku about rain."], chat=True,
        ...                sampler=[Temperature(1.5), TopH(alpha=0.4)], max_new_tokens=64, seed=0)  # doctest: +SKIP
        >>> out.texts[0], out.entropies[0][:3]                                      # doctest: +SKIP
    """
    rows = normalise_prompts(prompts)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}")
    chain = resolve_sampler(sampler)
    stops = _check_stop(stop)
    seeds = [s + j for s in _check_seeds(seed, len(rows)) for j in range(n)]
    if isinstance(chain, RowSamplers) and len(chain) != len(seeds):
        raise ValueError(f"RowSamplers holds {len(chain)} samplers for {len(seeds)} rows (prompts × n)")
    encoded = [encode_prompt(tokenizer, p, chat) for p in rows]
    for position, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {position} is empty: it encodes to no tokens")
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(ids) for ids in encoded)
    if limit is not None and longest + max_new_tokens > limit:
        raise ValueError(
            f"prompt length {longest} + max_new_tokens {max_new_tokens} exceeds the model's context of {limit} tokens"
        )
    events = _decode(model, tokenizer, encoded, n, chain, max_new_tokens, stops, seeds, ignore_eos)
    if stream:
        return GenerationStream(events)
    for item in events:
        if isinstance(item, GenerationResult):
            return item
    raise AssertionError("decoding ended without a result")


def _draw(sampler, sequences: torch.Tensor, raw: torch.Tensor, seeds: torch.Tensor, step: int) -> Draw:
    return greedy_draw(raw) if sampler is None else sampler.sample(sequences, raw, seeds, step)


@torch.inference_mode()
def _decode(
    model, tokenizer, encoded: list[list[int]], n: int, chain: SamplerChain | None, max_new_tokens: int,
    stops: list[str], seeds: list[int], ignore_eos: bool,
) -> Iterator[StreamEvent | GenerationResult]:
    device = next(model.parameters()).device
    eos = set() if ignore_eos else _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(eos) if eos else 0)
    row_seeds = as_seed_tensor(seeds, len(seeds), device)
    state = [_Row(tokenizer, stops) for _ in seeds]
    started = time.perf_counter()

    sequences, mask = left_pad(encoded, pad_id, device)
    positions = position_ids(mask)
    out = model(input_ids=sequences, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    raw = out.logits[:, -1, :]
    if n > 1:  # the samples of a prompt share its prefill
        cache.batch_repeat_interleave(n)
        raw, sequences, mask, positions = (t.repeat_interleave(n, dim=0) for t in (raw, sequences, mask, positions))
    active = list(range(len(state)))  # the rows still in the batch, by original index
    for step in range(max_new_tokens):
        tokens, telemetry = _draw(chain, sequences, raw, row_seeds, step)
        for k, i in enumerate(active):
            if not math.isfinite(telemetry.logprob_after[k]):
                raise ValueError(f"the sampler removed every token of row {i}; check its processors")
        chosen = tokens.tolist()
        last = step == max_new_tokens - 1
        for k, i in enumerate(active):
            text = state[i].add(chosen[k], telemetry, k, chosen[k] in eos, last)
            yield StreamEvent(row=i, text=text, token_id=chosen[k], finish_reason=state[i].finish_reason)
        keep = [k for k, i in enumerate(active) if state[i].finish_reason is None]
        if not keep:
            break
        if len(keep) < len(active):  # finished rows leave the batch and its cache
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            sequences, mask, positions, row_seeds = (t[index] for t in (sequences, mask, positions, row_seeds))
            chosen = [chosen[k] for k in keep]
            active = [active[k] for k in keep]
            if chain is not None:  # SamplerChain and RowSamplers: stateful processors follow the rows
                chain.select_rows(keep)
        next_tokens = torch.tensor(chosen, device=device).view(-1, 1)
        sequences = torch.cat([sequences, next_tokens], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=next_tokens, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
        )
        cache = out.past_key_values
        raw = out.logits[:, -1, :]
    yield GenerationResult(
        texts=[row.text for row in state],
        token_ids=[row.token_ids for row in state],
        finish_reasons=[row.finish_reason or "length" for row in state],
        telemetry=[row.telemetry for row in state],
        prompt_tokens=[len(ids) for ids in encoded for _ in range(n)],
        seeds=seeds,
        elapsed_s=time.perf_counter() - started,
    )
