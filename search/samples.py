"""Whole-answer baselines: best-of-N (score N complete answers, keep the best) and self-consistency
(majority vote over the answers extracted from N samples)."""

from __future__ import annotations

import time

from ..decoding.generate import generate
from ..decoding.prompts import Prompt
from ..decoding.sampler_spec import SamplerSpec
from .answers import Extractor, last_number, vote
from .result import ParticleTrace, SearchResult
from .rewards import as_reward, positive_int, score_all
from .stepping import search_sampler


def sample_answers(
    model, tokenizer, prompt: Prompt, n: int, sampler: SamplerSpec, max_new_tokens: int, seed: int, chat: bool,
) -> tuple[list[ParticleTrace], int]:
    """``n`` complete answers to ``prompt`` (one prefill, ``n`` rows) as traces of a single step each,
    and the number of tokens generated."""
    out = generate(
        model, tokenizer, prompt, sampler=search_sampler(sampler),
        max_new_tokens=max_new_tokens, seed=seed, chat=chat, n=n,
    )
    traces = [
        ParticleTrace(
            text=text, token_ids=ids, logprobs=tel.logprob_before, entropies=tel.entropy_before, step_starts=[0],
            step_texts=[text], finish_reason="length" if reason == "length" else "eos",
        )
        for text, ids, tel, reason in zip(out.texts, out.token_ids, out.telemetry, out.finish_reasons)
    ]
    return traces, out.generated_tokens


class BestOfN:
    """Sample ``n`` complete answers and keep the one ``reward`` scores highest (ties: the first).

    Example:
        >>> from entrodec.search import BestOfN, SelfCertainty                  # doctest: +SKIP
        >>> BestOfN(model, tok, reward=SelfCertainty(), n=8).run("Add 3, 4 and 2.").answer  # doctest: +SKIP
    """

    def __init__(
        self, model, tokenizer, reward, n: int = 8, sampler: SamplerSpec = None, max_new_tokens: int = 512, chat: bool = True,
    ) -> None:
        self.model, self.tokenizer, self.reward = model, tokenizer, as_reward(reward)
        self.n, self.sampler, self.max_new_tokens, self.chat = positive_int("n", n), sampler, max_new_tokens, chat

    def run(self, prompt: Prompt, seed: int = 0) -> SearchResult:
        started = time.perf_counter()
        traces, tokens = sample_answers(self.model, self.tokenizer, prompt, self.n, self.sampler, self.max_new_tokens, seed, self.chat)
        rewards = score_all(self.reward, prompt, traces)
        for trace, r in zip(traces, rewards):
            trace.rewards.append(r)
        best = max(range(len(traces)), key=lambda k: rewards[k])
        return SearchResult(
            answer=traces[best].text, best=best, particles=traces, tokens_generated=tokens, reward_calls=len(traces),
            steps=1, elapsed_s=time.perf_counter() - started,
        )


class SelfConsistency:
    """Sample ``n`` complete answers, extract each one's final answer with ``extract`` (default: the last
    number in the text) and return a sample holding the most frequent one (ties: the answer seen first);
    ``votes`` has the tally. No reward is needed.

    Example:
        >>> from entrodec.search import SelfConsistency                         # doctest: +SKIP
        >>> result = SelfConsistency(model, tok, n=8).run("Add 3, 4 and 2.")     # doctest: +SKIP
        >>> result.votes                                                         # doctest: +SKIP
    """

    def __init__(
        self, model, tokenizer, n: int = 8, sampler: SamplerSpec = None, max_new_tokens: int = 512,
        extract: Extractor = last_number, chat: bool = True,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.n, self.sampler, self.max_new_tokens, self.extract, self.chat = positive_int("n", n), sampler, max_new_tokens, extract, chat

    def run(self, prompt: Prompt, seed: int = 0) -> SearchResult:
        started = time.perf_counter()
        traces, tokens = sample_answers(self.model, self.tokenizer, prompt, self.n, self.sampler, self.max_new_tokens, seed, self.chat)
        answers = [self.extract(t.text) for t in traces]
        winner, tally = vote(answers)
        best = 0 if winner is None else answers.index(winner)
        return SearchResult(
            answer=traces[best].text, best=best, particles=traces, tokens_generated=tokens, steps=1, votes=tally,
            elapsed_s=time.perf_counter() - started,
        )
