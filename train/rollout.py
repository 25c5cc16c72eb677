"""Rollouts: completions drawn by ``generate()`` through the run's sampler chain, scored by the task,
and packed into right-padded token tensors for the training forward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..decoding import SamplerChain, generate
from ..decoding.prompts import encode_prompt
from .tasks import Example, Task, checked_reward


@dataclass
class Rollouts:
    """One step's completions, the ``group_size`` samples of each prompt together.

    ``behaviour_logp`` is log μ(a), the sampled token's log-prob under the *processed* distribution it
    was drawn from; ``model_logp`` is log π_old(a), the model's own (unprocessed) log-prob of the token
    in the same forward; ``entropy`` is H of the model's own distribution there (nats); ``kept`` the size
    of the processed distribution's support."""

    examples: list[Example]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    behaviour_logp: list[list[float]]
    model_logp: list[list[float]]
    entropy: list[list[float]]
    kept: list[list[int]]
    rewards: torch.Tensor
    auxiliary: list[bool]

    def __len__(self) -> int:
        return len(self.texts)

    def __add__(self, other: "Rollouts") -> "Rollouts":
        return Rollouts(
            self.examples + other.examples, self.prompt_ids + other.prompt_ids,
            self.completion_ids + other.completion_ids, self.texts + other.texts,
            self.behaviour_logp + other.behaviour_logp, self.model_logp + other.model_logp,
            self.entropy + other.entropy, self.kept + other.kept,
            torch.cat([self.rewards, other.rewards]), self.auxiliary + other.auxiliary,
        )


def roll_out(model, tokenizer, task: Task, examples: Sequence[Example], sampler: SamplerChain, group_size: int,
             max_new_tokens: int, seeds: Sequence[int], auxiliary: bool = False) -> Rollouts:
    """``group_size`` completions of every example (chat-formatted), drawn with ``sampler``; example ``i``'s
    ``j``-th sample uses seed ``seeds[i] + j``."""
    prompts = [example.prompt for example in examples]
    out = generate(model, tokenizer, prompts, sampler=sampler, max_new_tokens=max_new_tokens,
                   seed=list(seeds), chat=True, n=group_size)
    rows = [example for example in examples for _ in range(group_size)]
    prompt_ids = [encode_prompt(tokenizer, prompt, True) for prompt in prompts]
    return Rollouts(
        examples=rows,
        prompt_ids=[prompt_ids[i // group_size] for i in range(len(rows))],
        completion_ids=out.token_ids,
        texts=out.texts,
        behaviour_logp=[t.logprob_after for t in out.telemetry],
        model_logp=[t.logprob_before for t in out.telemetry],
        entropy=[t.entropy_before for t in out.telemetry],
        kept=[t.kept for t in out.telemetry],
        rewards=torch.tensor([checked_reward(task, e, text) for e, text in zip(rows, out.texts)]),
        auxiliary=[auxiliary] * len(rows),
    )


@dataclass
class TokenBatch:
    """Rollouts as tensors. ``input_ids``/``attention_mask``: ``[rows, length]``, prompt then completion,
    right-padded. Per-token tensors are ``[rows, length - 1 - first]``: position ``t`` holds the token
    ``input_ids[:, first + 1 + t]`` predicted by the logits at ``first + t``, where ``first`` is the first
    position that predicts any completion token (the prompt before it needs no logits); ``mask`` marks
    completion tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    first: int
    mask: torch.Tensor
    behaviour_logp: torch.Tensor
    model_logp: torch.Tensor
    entropy: torch.Tensor
    reinforce: torch.Tensor

    @property
    def targets(self) -> torch.Tensor:
        return self.input_ids[:, self.first + 1:]

    def rows(self, index: torch.Tensor) -> "TokenBatch":
        pick = {f: getattr(self, f)[index] for f in ("input_ids", "attention_mask", "mask", "behaviour_logp", "model_logp", "entropy", "reinforce")}
        return TokenBatch(first=self.first, **pick)


def pack(rollouts: Rollouts, pad_id: int, device: torch.device | str = "cpu") -> TokenBatch:
    """Lay each row out as its prompt followed by its completion, padded on the right."""
    rows = len(rollouts)
    length = max(len(p) + len(c) for p, c in zip(rollouts.prompt_ids, rollouts.completion_ids))
    first = min(len(p) for p in rollouts.prompt_ids) - 1
    width = length - 1 - first
    input_ids = torch.full((rows, length), pad_id, dtype=torch.long)
    attention = torch.zeros(rows, length, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.bool)
    per_token = {name: torch.zeros(rows, width) for name in ("behaviour_logp", "model_logp", "entropy")}
    for r, (prompt, completion) in enumerate(zip(rollouts.prompt_ids, rollouts.completion_ids)):
        end = len(prompt) + len(completion)
        input_ids[r, :end] = torch.tensor(prompt + completion)
        attention[r, :end] = 1
        span = slice(len(prompt) - 1 - first, end - 1 - first)
        mask[r, span] = True
        for name, values in per_token.items():
            values[r, span] = torch.tensor(getattr(rollouts, name)[r])
    reinforce = torch.tensor(rollouts.auxiliary).view(-1, 1) & mask
    return TokenBatch(input_ids.to(device), attention.to(device), first, mask.to(device),
                      *(per_token[n].to(device) for n in ("behaviour_logp", "model_logp", "entropy")), reinforce.to(device))
