"""ModelSwitch: entropy-adaptive model switching (EAD), the rule that picks the model for each token.

Simonds, "Entropy Adaptive Decoding" (arXiv 2502.06833): a small model writes while the rolling mean
of the per-token entropy stays low and a large model takes over where it rises, with a minimum dwell
between switches. Nothing is verified (unlike speculative decoding), so the text may differ from the
large model's. :class:`~entrodec.decoding.switch_batch.SwitchingBatch` keeps both models' caches.
"""

from __future__ import annotations

import math
from collections import deque

import torch

from .checks import at_least, in_range, one_of

SMALL, LARGE = "small", "large"
ENTROPY_SOURCES = ("active", SMALL)


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of ``model``, tied tensors counted once (what one token's forward touches)."""
    return sum(p.numel() for p in model.parameters())


def _vocabulary_size(model) -> int:
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


class ModelSwitch:
    """Let a small model write the confident stretches of the text and the large model the rest.

    Per generated token, the entropy (bits) of the writing model's next-token distribution before any
    processor is averaged over the last ``window`` tokens. A row written by the small model moves to
    the large one when that mean is ``>= threshold_bits``; a row written by the large one moves back
    when it is ``<= threshold_bits``; either move waits until the active model has written
    ``min_dwell`` tokens. The first token's model is chosen by the same rule from the small model's
    entropy at the end of the prompt. Each row switches on its own; any sampler chain applies to
    whichever model's logits are active.

    Args:
        small_model: a causal LM with the large model's tokenizer and vocabulary: a smaller member of
            its family, or :func:`~entrodec.decoding.draft.make_draft` of the large model.
        threshold_bits: the threshold τ in bits. ``float("inf")`` is the small model alone,
            ``float("-inf")`` the large model alone.
        window: tokens in the rolling mean (``>= 1``; the paper uses 5).
        min_dwell: tokens the active model writes before the next switch (``>= 0``; the paper uses 10).
        entropy_of: ``"active"`` (the paper: the model that wrote the token) or ``"small"`` (the small
            model reads every token, so the signal does not depend on which model writes; it costs a
            small-model pass per token).
        tokenizer: the small model's own tokenizer, if it has one, to check against ``generate()``'s.

    Example:
        >>> from entrodec.decoding import ModelSwitch, generate, load_model, make_draft, TopH   # doctest: +SKIP
        >>> large, tok = load_model()                                                         # doctest: +SKIP
        >>> switch = ModelSwitch(make_draft(large, layers=8, distill_tokens=16_000), threshold_bits=3.0)  # doctest: +SKIP
        >>> out = generate(large, tok, "Name three rivers.", chat=True, switch=switch, sampler=[TopH(0.4)])  # doctest: +SKIP
        >>> out.switching[0].models[:5], out.switch_summary()["cost"]                        # doctest: +SKIP
    """

    def __init__(
        self,
        small_model: torch.nn.Module,
        threshold_bits: float,
        window: int = 5,
        min_dwell: int = 10,
        entropy_of: str = "active",
        tokenizer=None,
    ) -> None:
        if not isinstance(small_model, torch.nn.Module):
            raise TypeError(f"`small_model` must be a causal LM (torch.nn.Module), got {type(small_model).__name__}")
        in_range("threshold_bits", threshold_bits, -math.inf)
        at_least("window", window, 1)
        at_least("min_dwell", min_dwell, 0)
        one_of("entropy_of", entropy_of, ENTROPY_SOURCES)
        self.small_model = small_model
        self.threshold_bits = float(threshold_bits)
        self.window = window
        self.min_dwell = min_dwell
        self.entropy_of = entropy_of
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return (f"ModelSwitch(threshold_bits={self.threshold_bits}, window={self.window}, min_dwell={self.min_dwell}, "
                f"entropy_of={self.entropy_of!r})")

    def first_model(self, entropy_bits: float) -> str:
        """The model for a row's first token, from the small model's entropy at the end of its prompt."""
        return LARGE if entropy_bits >= self.threshold_bits else SMALL

    def check_compatible(self, large_model: torch.nn.Module, tokenizer) -> None:
        """Raise ``ValueError`` naming what differs if the two models cannot share one token stream."""
        small = self.small_model
        big_vocab, small_vocab = _vocabulary_size(large_model), _vocabulary_size(small)
        if big_vocab != small_vocab:
            raise ValueError(
                f"ModelSwitch: the small model's vocabulary has {small_vocab} entries and the large model's {big_vocab}; "
                "the two models must share one tokenizer and vocabulary"
            )
        for name in ("bos_token_id", "eos_token_id"):
            theirs, ours = getattr(small.config, name, None), getattr(large_model.config, name, None)
            if theirs is not None and ours is not None and theirs != ours:
                raise ValueError(f"ModelSwitch: the models' {name} differ (small {theirs}, large {ours}): they do not share a tokenizer")
        if self.tokenizer is not None:
            _check_same_tokenizer(self.tokenizer, tokenizer)
        big_device, small_device = next(large_model.parameters()).device, next(small.parameters()).device
        if big_device != small_device:
            raise ValueError(f"ModelSwitch: the small model is on {small_device} and the large model on {big_device}; put both on one device")


def _check_same_tokenizer(small_tokenizer, tokenizer) -> None:
    ours, theirs = tokenizer.get_vocab(), small_tokenizer.get_vocab()
    if ours == theirs:
        return
    only_small = sorted(set(theirs) - set(ours))
    moved = sorted(t for t in set(theirs) & set(ours) if theirs[t] != ours[t])
    example = (f"{only_small[0]!r} only in the small model's" if only_small
               else f"{moved[0]!r} is id {theirs[moved[0]]} in the small model's and {ours[moved[0]]} in generate()'s")
    raise ValueError(
        f"ModelSwitch: the small model's tokenizer differs from generate()'s ({len(theirs)} vs {len(ours)} tokens, "
        f"{len(only_small)} only in the small one, {len(moved)} with other ids; e.g. {example})"
    )


class RowRule:
    """One row's switching state: the active model, the rolling entropy window and the dwell count."""

    def __init__(self, switch: ModelSwitch, first: str) -> None:
        self.switch = switch
        self.active = first
        self.window: deque[float] = deque(maxlen=switch.window)
        self.dwell = 0

    def observe(self, entropy_bits: float) -> float:
        """Record the entropy of the token just written, switch if the rule says so, and return the
        rolling mean the rule compared."""
        self.window.append(entropy_bits)
        self.dwell += 1
        mean = sum(self.window) / len(self.window)
        if self.dwell >= self.switch.min_dwell:
            tau = self.switch.threshold_bits
            target = LARGE if self.active == SMALL and mean >= tau else SMALL if self.active == LARGE and mean <= tau else None
            if target is not None:
                self.active, self.dwell = target, 0
        return mean
