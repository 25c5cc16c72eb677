"""Log-probabilities of rollout tokens in the training forward: under the model itself, or under the
processed distribution the rollout chain makes of the model's logits (``behaviour.mode: recompute``)."""

from __future__ import annotations

import inspect

import torch
from transformers import LogitsProcessor

from ..decoding import SamplerChain
from ..decoding.processors import EntropyTemperature, Temperature
from ..decoding.processors.base import Truncation
from ..decoding.processors.typical import Typical


def check_recomputable(chain: SamplerChain) -> None:
    """Raise unless every processor of ``chain`` is a deterministic function of the current logits, which
    recomputing the processed distribution in the training forward needs."""
    for position, processor in enumerate(chain):
        stateless = isinstance(processor, (Temperature, Truncation, Typical)) or (
            isinstance(processor, EntropyTemperature) and processor.stateless
        )
        if not stateless:
            raise ValueError(
                f"behaviour.mode 'recompute' needs processors that are functions of the logits alone; entry "
                f"{position} ({type(processor).__name__}{' with rolling windows' if isinstance(processor, EntropyTemperature) else ''}) "
                "is not. Use behaviour.mode 'truncated-is'."
            )


def forward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Float32 logits at positions ``first .. length - 2`` (``[rows, length - 1 - first, vocab]``), which
    predict ``input_ids[:, first + 1:]``. The language-model head runs on those positions only when the
    model accepts ``logits_to_keep`` (most transformers causal LMs do)."""
    keep = input_ids.shape[1] - first
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    if "logits_to_keep" in inspect.signature(inner.forward).parameters:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    else:  # an older or custom model: full logits, then cut
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, first:]
    return logits[:, :-1].float()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log π(target) at every position (gradient flows to ``logits``)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(π) at every position, nats (gradient flows to ``logits``)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def processed_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                       chain: LogitsProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    """log of the processed distribution's probability of each target, and whether the target is still
    in the processed support (a token the processors now remove has no log-prob and no gradient).

    Temperatures and kept sets are recomputed from the logits without gradient (as at sampling time);
    the gradient flows through ``log_softmax(logits / T)`` restricted to the kept set."""
    flat, flat_targets = logits[mask], targets[mask]
    with torch.no_grad():
        processed = chain(None, flat.detach())
        temperature = chain.applied_temperature(flat.shape[0]).to(flat.device)
    if bool((temperature <= 0).any()):
        raise ValueError("behaviour.mode 'recompute' needs a positive temperature (greedy rollouts have no gradient)")
    kept = torch.isfinite(processed)
    scaled = (flat / temperature.unsqueeze(-1)).masked_fill(~kept, float("-inf"))
    chosen = torch.log_softmax(scaled, dim=-1).gather(-1, flat_targets.unsqueeze(-1)).squeeze(-1)
    inside = kept.gather(-1, flat_targets.unsqueeze(-1)).squeeze(-1)
    logp = torch.zeros_like(targets, dtype=logits.dtype)
    logp[mask] = torch.where(inside, chosen, torch.zeros_like(chosen))
    in_support = torch.zeros_like(mask)
    in_support[mask] = inside
    return logp, in_support
