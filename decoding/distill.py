"""Distilling an early-exit draft on its large model's own text: the large model writes, then the draft
learns the large model's next-token distributions over that text (forward KL, teacher → draft)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm import tqdm

from .generate import generate
from .processors import MinP
from .prompts import encode_prompt, left_pad, position_ids

# Requests of many kinds, so the text covers what a chat model is asked; none is a benchmark question.
DISTILL_PROMPTS = [
    "Explain how a rainbow forms.", "Write a short story about a lighthouse keeper.",
    "Give three tips for learning a new language.", "What makes a good breakfast?",
    "Describe your ideal weekend.", "How do bees make honey?", "Write a poem about autumn leaves.",
    "Explain what a computer program is to a child.", "List some healthy snacks.",
    "Why do we need sleep?", "Write a friendly email inviting a colleague to lunch.",
    "How does a bicycle work?", "Summarise the plot of a fairy tale you like.",
    "What should I pack for a beach trip?", "Explain the water cycle step by step.",
    "Write a short dialogue between a cat and a dog.", "How can I save money each month?",
    "Describe a busy market in the morning.", "What is the difference between weather and climate?",
    "Give me a simple recipe for pancakes.", "Why is exercise important?", "Write a limerick about a frog.",
    "How do plants grow from seeds?", "Explain how to add two fractions.", "Tell me about the moon.",
    "What are good habits for studying?", "Write a thank-you note to a teacher.",
    "How does a train move?", "Describe the sound of rain.", "What is a noun? Give examples.",
    "Plan a birthday party for a ten-year-old.", "Explain why the sky is blue.",
]
TEXT_TOKENS = 128  # per sample: long enough to leave the opening, short enough to batch well


def teacher_text(large, tokenizer, tokens: int, prompts: Sequence[str], seed: int, batch_size: int,
                 progress: bool) -> tuple[list[list[int]], list[int]]:
    """Chat sequences (prompt + reply) the large model writes, about ``tokens`` reply tokens in all,
    sampled at temperature 1 with min-p 0.05 (its own distribution without the incoherent tail)."""
    sequences, prompt_lengths, produced, round_ = [], [], 0, 0
    with tqdm(total=tokens, desc="draft: large model writes text", unit="tok", disable=not progress) as bar:
        while produced < tokens:
            chunk = [prompts[(round_ * batch_size + i) % len(prompts)] for i in range(batch_size)]
            out = generate(large, tokenizer, chunk, sampler=[MinP(0.05)], max_new_tokens=TEXT_TOKENS,
                           seed=seed + round_ * batch_size, chat=True)
            for prompt, reply in zip(chunk, out.token_ids):
                ids = encode_prompt(tokenizer, prompt, chat=True)
                sequences.append(ids + reply)
                prompt_lengths.append(len(ids))
            produced += out.generated_tokens
            bar.update(out.generated_tokens)
            round_ += 1
    return sequences, prompt_lengths


def _batch_kl(large, draft, rows: list[list[int]], starts: list[int], pad_id: int) -> torch.Tensor:
    """Mean forward KL(large ‖ draft) over the positions that predict reply tokens (and the one after)."""
    device = next(draft.parameters()).device
    ids, mask = left_pad(rows, pad_id, device)
    positions = position_ids(mask)
    width = ids.shape[1]
    # A row of length n is right-aligned: position j of the row sits at column width - n + j.
    column = torch.arange(width, device=device)
    first = torch.tensor([width - len(r) + s - 1 for r, s in zip(rows, starts)], device=device)
    scored = (column[None, :] >= first[:, None]) & (mask == 1)
    with torch.no_grad():
        teacher = torch.log_softmax(large(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float(), -1)
    student = torch.log_softmax(draft(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float(), -1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return kl[scored].mean()


def distill(large, draft, sequences: list[list[int]], prompt_lengths: list[int], pad_id: int, epochs: int,
            lr: float, batch_size: int, seed: int, progress: bool) -> dict[str, float]:
    """Train the draft's decoder layers and final norm (embeddings and head stay the large model's) to
    match the large model on ``sequences``; one tenth is held out to report KL before and after."""
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(seed)).tolist()
    held = order[: max(1, len(order) // 10)]
    train = order[len(held):] or held

    def held_out_kl() -> float:
        with torch.no_grad():
            values = [_batch_kl(large, draft, [sequences[i] for i in held[k:k + batch_size]],
                                [prompt_lengths[i] for i in held[k:k + batch_size]], pad_id).item()
                      for k in range(0, len(held), batch_size)]
        return sum(values) / len(values)

    before = held_out_kl()
    frozen = {id(draft.get_input_embeddings().weight), id(draft.get_output_embeddings().weight)}
    trainable = [p for p in draft.parameters() if id(p) not in frozen]
    for p in draft.parameters():
        p.requires_grad_(id(p) not in frozen)
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
    draft.train()
    with tqdm(total=steps, desc="draft: distilling", unit="step", disable=not progress) as bar:
        for epoch in range(epochs):
            shuffled = [train[i] for i in torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1 + epoch))]
            for k in range(0, len(shuffled), batch_size):
                chunk = shuffled[k:k + batch_size]
                loss = _batch_kl(large, draft, [sequences[i] for i in chunk], [prompt_lengths[i] for i in chunk], pad_id)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimiser.step()
                schedule.step()
                bar.set_postfix(kl=f"{loss.item():.3f}")
                bar.update(1)
    draft.eval()
    for p in draft.parameters():
        p.requires_grad_(False)
    return {"kl_before": before, "kl_after": held_out_kl(), "sequences": len(sequences), "steps": steps}
