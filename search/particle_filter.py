"""Particle filtering over reasoning steps (Puri et al., arXiv 2502.01618) and its entropic variant ePF
(arXiv 2510.05825): Entropic Annealing of the resampling distribution and Look-ahead Modulation."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence

import torch

from ..decoding.chain import SamplerChain
from ..decoding.continuation import eos_ids, pad_id
from ..decoding.decode_batch import DecodeBatch
from ..decoding.prompts import Prompt, check_fits, encode_prompt
from ..decoding.sampler_spec import SamplerSpec, resolve_sampler
from .annealing import Annealing, effective_sample_size, normalised
from .answers import Extractor, last_number, vote
from .resampling import METHODS, resample
from .result import ParticleTrace, SearchResult
from .rewards import as_reward, positive_int, score_all
from .stepping import StepDecoder, StepRules, particle_seed, search_sampler

SELECTIONS = ("best", "vote", "weighted_vote")
_CLIP = 1e-7


def reward_logit(reward: float) -> float:
    """The log-weight of a reward: ``logit(r)`` with ``r`` clipped to ``[1e-7, 1 − 1e-7]``.

    >>> reward_logit(0.5), round(reward_logit(1.0), 2)
    (0.0, 16.12)
    """
    r = min(max(reward, _CLIP), 1.0 - _CLIP)
    return math.log(r / (1.0 - r))


class ParticleFilter:
    """Particle filtering over steps: ``n_particles`` partial answers advance one step at a time (text up
    to ``step_delimiter`` or ``max_step_tokens``) in one batch; after each step ``reward`` scores every
    particle's whole partial answer, its log-weight is ``w = logit(r)``, and ``n_particles`` copies are
    resampled from ``softmax(w / softmax_temperature)``. Copies share their parent's KV cache and then
    continue independently. Finished particles (EOS, ``finish_pattern``, ``max_new_tokens``) keep their
    last weight and compete in resampling, but are never extended again (without ``max_new_tokens``, a
particle's length is bounded by ``max_steps · max_step_tokens``). After ``max_steps`` steps (or
    when every particle is finished) the answer is the particle with the highest last weight
    (``select="best"``), or the majority (``"vote"``) or weight-summed (``"weighted_vote"``) answer that
    ``extract`` finds.

    Options used by :class:`EntropicParticleFilter`: ``annealing`` (``"ess"``, ``"entropy"``, ``"none"`` or
    an :class:`Annealing`) tempers only the resampling distribution; ``lookahead=True`` adds Look-ahead
    Modulation: before resampling, a copy of every live particle is extended by one more step with
    ``lookahead_sampler`` (greedy by default), that successor is scored (``r'``), and the log-weight used
    for resampling becomes ``(1 − λ)·logit(r) + λ·logit(r')`` with ``λ = lookahead_weight``; the
    look-ahead text is then discarded. It costs one extra step of generation and one extra reward call
    per live particle per step (counted in ``tokens_generated`` and ``lookahead_tokens``). Finished
    particles have no successor: their ``r'`` is ``r``.

    ``sampler`` is any of our samplers (default: the model's own distribution, temperature 1).

    Example:
        >>> from entrodec.search import ParticleFilter, SelfCertainty   # doctest: +SKIP
        >>> pf = ParticleFilter(model, tok, reward=SelfCertainty(), n_particles=4, max_steps=4)  # doctest: +SKIP
        >>> pf.run("Add 3, 4 and 2.", seed=0).answer                      # doctest: +SKIP
    """

    def __init__(
        self, model, tokenizer, reward, n_particles: int = 8, step_delimiter: str = "\n\n", max_steps: int = 8,
        max_step_tokens: int = 128, max_new_tokens: int | None = None, sampler: SamplerSpec = None,
        resampling: str = "multinomial", softmax_temperature: float = 1.0, annealing: str | Annealing = "none",
        lookahead: bool = False, lookahead_weight: float = 0.5, lookahead_sampler: SamplerSpec = None,
        finish_pattern: str | None = None, select: str = "best", extract: Extractor = last_number, chat: bool = True,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.reward = as_reward(reward)
        self.n_particles = positive_int("n_particles", n_particles)
        self.max_steps = positive_int("max_steps", max_steps)
        if not isinstance(step_delimiter, str) or not step_delimiter:
            raise ValueError(f"`step_delimiter` must be a non-empty string, got {step_delimiter!r}")
        if resampling not in METHODS:
            raise ValueError(f"`resampling` must be one of {', '.join(METHODS)}, got {resampling!r}")
        if not (isinstance(softmax_temperature, (int, float)) and 0 < softmax_temperature < math.inf):
            raise ValueError(f"`softmax_temperature` must be a finite number > 0, got {softmax_temperature!r}")
        if not (isinstance(lookahead_weight, (int, float)) and 0.0 <= lookahead_weight <= 1.0):
            raise ValueError(f"`lookahead_weight` must be in [0, 1], got {lookahead_weight!r}")
        if select not in SELECTIONS:
            raise ValueError(f"`select` must be one of {', '.join(SELECTIONS)}, got {select!r}")
        chain = resolve_sampler(search_sampler(sampler))
        if not isinstance(chain, SamplerChain):
            raise TypeError("`sampler` must be one sampler for every particle (a chain, processors or a preset), not RowSamplers")
        self.sampler = chain
        self.lookahead_sampler = resolve_sampler(lookahead_sampler)
        self.annealing = annealing if isinstance(annealing, Annealing) else Annealing(annealing)
        self.resampling, self.softmax_temperature = resampling, float(softmax_temperature)
        self.lookahead, self.lookahead_weight = bool(lookahead), float(lookahead_weight)
        self.select, self.extract, self.chat = select, extract, chat
        self.eos = frozenset(eos_ids(model, tokenizer))
        self.rules = StepRules(
            step_delimiter, positive_int("max_step_tokens", max_step_tokens),
            None if max_new_tokens is None else positive_int("max_new_tokens", max_new_tokens),
            self.eos, None if finish_pattern is None else re.compile(finish_pattern),
        )
        self.decoder = StepDecoder(tokenizer, self.rules)

    def run(self, prompt: Prompt, seed: int = 0, on_step: Callable[[SearchResult, int], None] | None = None) -> SearchResult:
        """Search for an answer to ``prompt`` (a string, or a conversation; strings are sent as a user
        message unless the filter was built with ``chat=False``). The same seed repeats the search.
        ``on_step(result_so_far, live_particles)`` is called after every step (progress display)."""
        started = time.perf_counter()
        ids = self._encode(prompt)
        n = self.n_particles
        batch = DecodeBatch(self.model, pad_id(self.tokenizer, set(self.eos)))
        batch.join([ids], [n])  # one prefill shared by every particle
        traces = [ParticleTrace() for _ in range(n)]
        rows = list(range(n))  # batch row k holds particle rows[k]
        generator = torch.Generator().manual_seed(seed)
        result = SearchResult(answer="", best=0, particles=traces)
        for step in range(self.max_steps):
            live = list(rows)
            seeds = [particle_seed(seed, step, p) for p in rows]
            batch, rows, generated = self.decoder.step(batch, rows, traces, self.sampler, seeds)
            result.tokens_generated += generated
            result.steps = step + 1
            if step == self.max_steps - 1:  # the last step: no look-ahead, no resampling
                for p in rows:
                    traces[p].finish_reason = "max_steps"
                rows = []
            rewards = self._score(prompt, [traces[p] for p in live], result)
            weights = [reward_logit(r) for r in rewards]
            if self.lookahead and rows:
                weights = self._modulate(prompt, batch, rows, live, traces, weights, seed, step, result)
            for p, r, w in zip(live, rewards, weights):
                traces[p].rewards.append(r)
                traces[p].weights.append(w)
            if rows:
                traces, batch, rows = self._resample(traces, batch, rows, (step + 1) / self.max_steps, generator, result)
            result.particles = traces
            if on_step is not None:
                on_step(result, len(rows))
            if not rows:  # every particle is finished (or resampling kept only finished ones)
                break
        result.particles = traces
        result.best, result.votes = self._choose(traces)
        result.answer = traces[result.best].text
        result.elapsed_s = time.perf_counter() - started
        return result

    def _encode(self, prompt: Prompt) -> list[int]:
        ids = encode_prompt(self.tokenizer, prompt, self.chat)
        if not ids:
            raise ValueError("the prompt is empty: it encodes to no tokens")
        longest = self.max_steps * self.rules.max_step_tokens
        if self.rules.max_new_tokens is not None:
            longest = min(longest, self.rules.max_new_tokens)
        check_fits(self.model, len(ids), longest, f"up to {longest} new tokens (max_steps · max_step_tokens, or max_new_tokens)")
        return ids

    def _score(self, prompt: Prompt, particles: Sequence[ParticleTrace], result: SearchResult) -> list[float]:
        result.reward_calls += len(particles)
        return score_all(self.reward, prompt, particles)

    def _modulate(self, prompt, batch, rows, live, traces, weights, seed, step, result) -> list[float]:
        """Look-ahead Modulation: score one more (discarded) step of every live particle and blend its
        log-weight in."""
        ahead = {p: traces[p].fork() for p in rows}
        seeds = [particle_seed(seed, -1 - step, p) for p in rows]
        _, _, generated = self.decoder.step(batch.copy(), rows, ahead, self.lookahead_sampler, seeds, feed_last=False)
        result.tokens_generated += generated
        result.lookahead_tokens += generated
        successors = dict(zip(rows, self._score(prompt, [ahead[p] for p in rows], result)))
        lam = self.lookahead_weight
        return [
            (1 - lam) * w + lam * reward_logit(successors[p]) if p in successors else w
            for p, w in zip(live, weights)
        ]

    def _resample(self, traces, batch, rows, progress, generator, result):
        """Draw the next population; live copies take their parent's cache rows (forks)."""
        last = [t.weights[-1] for t in traces]
        base = normalised(last, self.softmax_temperature)
        temperature = self.annealing.temperature(base, progress)
        result.ess_history.append(effective_sample_size(base))
        result.temperature_history.append(temperature)
        chosen = resample(self.resampling, normalised(last, self.softmax_temperature * temperature), self.n_particles, generator)
        position = {p: k for k, p in enumerate(rows)}
        new_traces, new_rows, take, seen = [], [], [], set()
        for j, parent in enumerate(chosen):
            new_traces.append(traces[parent].fork())
            if parent in position:
                new_rows.append(j)
                take.append(position[parent])
                if parent in seen:
                    result.reused_prefix_tokens += int(batch.lengths[position[parent]])
                seen.add(parent)
        batch.select(take)
        return new_traces, batch, new_rows

    def _choose(self, traces: list[ParticleTrace]) -> tuple[int, dict[str, float]]:
        last = [t.weights[-1] if t.weights else -math.inf for t in traces]
        best = max(range(len(traces)), key=lambda k: last[k])
        if self.select == "best":
            return best, {}
        answers = [self.extract(t.text) for t in traces]
        weights = None if self.select == "vote" else normalised(last).tolist()
        winner, tally = vote(answers, weights)
        if winner is None:
            return best, tally
        return max((k for k in range(len(traces)) if answers[k] == winner), key=lambda k: last[k]), tally


class EntropicParticleFilter(ParticleFilter):
    """Entropic particle filtering (ePF, arXiv 2510.05825): :class:`ParticleFilter` with Entropic
    Annealing (``annealing="ess"``: when the weights' ESS ratio is below 0.5 in the first half of the
    search, resample from ``softmax(w / T)`` with ``T = max(1, (1/ess_ratio)·(1 − progress))``),
    systematic resampling, and Look-ahead Modulation on by default. Every option of ParticleFilter
    applies; ``lookahead=False`` gives annealing alone.

    Example:
        >>> from entrodec.search import EntropicParticleFilter, SelfCertainty      # doctest: +SKIP
        >>> epf = EntropicParticleFilter(model, tok, reward=SelfCertainty(), n_particles=8,
        ...                              step_delimiter="\\n\\n", max_steps=6, lookahead=True)  # doctest: +SKIP
        >>> result = epf.run("Add 3, 4 and 2.", seed=0)                          # doctest: +SKIP
        >>> result.answer, result.ess_history, result.temperature_history        # doctest: +SKIP
    """

    def __init__(
        self, model, tokenizer, reward, n_particles: int = 8, *, annealing: str | Annealing = "ess",
        resampling: str = "systematic", lookahead: bool = True, **options,
    ) -> None:
        super().__init__(
            model, tokenizer, reward, n_particles, annealing=annealing, resampling=resampling, lookahead=lookahead, **options,
        )
