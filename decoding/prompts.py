"""Turning the user's prompts (strings or chat-message lists) into left-padded token batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch

Messages = list[dict[str, Any]]
Prompt = Union[str, Messages]


def _is_messages(item: Any) -> bool:
    return isinstance(item, list) and len(item) > 0 and all(isinstance(m, dict) for m in item)


def normalise_prompts(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """A single string or conversation becomes a batch of one; anything else must be a non-empty list of
    strings and/or conversations (lists of ``{"role", "content"}`` mappings)."""
    if isinstance(prompts, str) or _is_messages(prompts):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"`prompts` must be a string, a list of chat messages, or a list of those; got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("`prompts` is empty: pass at least one prompt")
    for position, item in enumerate(prompts):
        if not (isinstance(item, str) or _is_messages(item)):
            raise TypeError(
                f"prompt {position} must be a string or a non-empty list of chat messages (dicts), got {item!r:.80}"
            )
    return list(prompts)


def encode_prompt(tokenizer, prompt: Prompt, chat: bool) -> list[int]:
    """Token ids of one prompt. Conversations, and strings when ``chat`` is true, go through the
    tokenizer's chat template with the assistant turn opened."""
    if isinstance(prompt, str) and not chat:
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("this tokenizer has no chat template: pass plain-text prompts with chat=False")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_fits(model, prompt_length: int, new_tokens: int, budget: str) -> None:
    """Raise if ``prompt_length + new_tokens`` exceeds the model's context; ``budget`` names where
    ``new_tokens`` comes from in the message."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and prompt_length + new_tokens > limit:
        raise ValueError(f"prompt length {prompt_length} + {budget} exceeds the model's context of {limit} tokens")


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every row right-aligned, as causal decoding needs."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row sees the same positions as alone."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)
