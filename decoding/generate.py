"""generate(): batched decoding with a KV cache, a sampler chain, stop rules, seeds and streaming."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch

from .chain import SamplerChain
from .checks import at_least
from .continuation import Continuation, check_drawable, eos_ids, pad_id
from .decode_batch import DecodeBatch
from .draw import as_seed_tensor
from .fused import Draw, greedy_draw
from .prompts import Prompt, check_fits, encode_prompt, normalise_prompts
from .result import GenerationResult, StreamEvent
from .row_samplers import RowSamplers
from .sampler_spec import SamplerSpec, resolve_sampler
from .switch import ModelSwitch
from .switch_batch import SwitchingBatch


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
    switch: ModelSwitch | None = None,
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
        switch: a :class:`ModelSwitch` to let its small model write the low-entropy stretches and
            ``model`` the rest; ``result.switching`` then tells which model wrote each token and what it
            cost.

    Example:
        >>> from entrodec.decoding import load_model, generate, Temperature, TopH  # doctest: +SKIP
        >>> model, tok = load_model()                                              # doctest: +SKIP
        >>> out = generate(model, tok, ["Write a haiku about rain."], chat=True,
        ...                sampler=[Temperature(1.5), TopH(alpha=0.4)], max_new_tokens=64, seed=0)  # doctest: +SKIP
        >>> out.texts[0], out.entropies[0][:3]                                      # doctest: +SKIP
    """
    rows = normalise_prompts(prompts)
    at_least("max_new_tokens", max_new_tokens, 1)
    at_least("n", n, 1)
    chain = resolve_sampler(sampler)
    stops = _check_stop(stop)
    seeds = [s + j for s in _check_seeds(seed, len(rows)) for j in range(n)]
    if isinstance(chain, RowSamplers) and len(chain) != len(seeds):
        raise ValueError(f"RowSamplers holds {len(chain)} samplers for {len(seeds)} rows (prompts × n)")
    encoded = [encode_prompt(tokenizer, p, chat) for p in rows]
    for position, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {position} is empty: it encodes to no tokens")
    longest = max(len(ids) for ids in encoded)
    check_fits(model, longest, max_new_tokens, f"max_new_tokens {max_new_tokens}")
    if switch is not None:
        if not isinstance(switch, ModelSwitch):
            raise TypeError(f"`switch` must be a ModelSwitch, got {type(switch).__name__}")
        switch.check_compatible(model, tokenizer)
        check_fits(switch.small_model, longest, max_new_tokens, f"max_new_tokens {max_new_tokens} (small model)")
    events = _decode(model, tokenizer, encoded, n, chain, max_new_tokens, stops, seeds, ignore_eos, switch)
    if stream:
        return GenerationStream(events)
    for item in events:
        if isinstance(item, GenerationResult):
            return item
    raise AssertionError("decoding ended without a result")


def draw_step(sampler: SamplerChain | RowSamplers | None, sequences: torch.Tensor, raw: torch.Tensor, seeds: torch.Tensor,
              step: int | torch.Tensor) -> Draw:
    """One decoding step's tokens and telemetry: greedy when ``sampler`` is ``None``."""
    return greedy_draw(raw) if sampler is None else sampler.sample(sequences, raw, seeds, step)


def _decode(
    model, tokenizer, encoded: list[list[int]], n: int, chain: SamplerChain | None, max_new_tokens: int,
    stops: list[str], seeds: list[int], ignore_eos: bool, switch: ModelSwitch | None,
) -> Iterator[StreamEvent | GenerationResult]:
    eos = set() if ignore_eos else eos_ids(model, tokenizer)
    pad = pad_id(tokenizer, eos)
    batch = DecodeBatch(model, pad) if switch is None else SwitchingBatch(model, switch, pad)
    row_seeds = as_seed_tensor(seeds, len(seeds), batch.device)
    state = [Continuation(tokenizer, stops) for _ in seeds]
    started = time.perf_counter()
    batch.join(encoded, [n] * len(encoded))  # the samples of a prompt share its prefill
    active = list(range(len(state)))  # the rows still in the batch, by original index
    for step in range(max_new_tokens):
        with torch.inference_mode():
            tokens, telemetry = draw_step(chain, batch.sequences, batch.logits, row_seeds, step)
        check_drawable(telemetry, active)
        chosen = tokens.tolist()
        if isinstance(batch, SwitchingBatch):  # before finished rows leave: their last token is recorded too
            batch.observe(chosen, telemetry.entropy_before)
        last = step == max_new_tokens - 1
        for k, i in enumerate(active):
            text = state[i].add(chosen[k], telemetry, k, chosen[k] in eos, last)
            yield StreamEvent(row=i, text=text, token_id=chosen[k], finish_reason=state[i].finish_reason)
        keep = [k for k, i in enumerate(active) if state[i].finish_reason is None]
        if not keep:
            break
        if len(keep) < len(active):  # finished rows leave the batch and its cache
            batch.select(keep)
            row_seeds = row_seeds[torch.tensor(keep, device=row_seeds.device)]
            chosen = [chosen[k] for k in keep]
            active = [active[k] for k in keep]
            if chain is not None:  # SamplerChain and RowSamplers: stateful processors follow the rows
                chain.select_rows(keep)
        batch.advance(chosen)
    yield GenerationResult(
        texts=[row.text for row in state],
        token_ids=[row.token_ids for row in state],
        finish_reasons=[row.finish_reason or "length" for row in state],
        telemetry=[row.telemetry for row in state],
        prompt_tokens=[len(ids) for ids in encoded for _ in range(n)],
        seeds=seeds,
        elapsed_s=time.perf_counter() - started,
        switching=batch.report() if isinstance(batch, SwitchingBatch) else None,
    )
