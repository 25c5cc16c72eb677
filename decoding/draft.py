"""make_draft(): a small partner for model switching cut from the large model itself (early exit).

The draft is the large model's first L decoder layers followed by its own final norm and head, so it
shares the tokenizer and vocabulary by construction. Early exit alone is a weak model; distillation
on text the large model writes (see :mod:`.distill`) teaches the cut layers to finish the job. A
distilled draft is cached on disk, keyed by the large model's weights and every setting.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from collections.abc import Sequence

import torch

from ..kernels.cache import build_folder_once, cache_dir
from .checks import at_least, in_range
from .distill import DISTILL_PROMPTS, distill, teacher_text

DRAFT_FORMAT = 1  # bump when the distillation recipe changes, so older cached drafts are not reused
_LAYER_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _decoder_layers(model) -> torch.nn.ModuleList:
    base = getattr(model, "base_model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or getattr(base, "norm", None) is None \
            or not hasattr(model.config, "num_hidden_layers"):
        raise TypeError(
            f"make_draft needs a decoder whose layers are `model.layers` followed by `model.norm` (Llama, Mistral, "
            f"Qwen2, SmolLM...); {type(model).__name__} is laid out differently"
        )
    return layers


def early_exit(large, layers: int):
    """The large model's first ``layers`` decoder layers, then its final norm and head (weights copied)."""
    total = len(_decoder_layers(large))
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers < total:
        raise ValueError(f"`layers` must be an integer in [1, {total - 1}] for this {total}-layer model, got {layers!r}")
    config = copy.deepcopy(large.config)
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (sliding, full...)
        config.layer_types = config.layer_types[:layers]
    parameter = next(large.parameters())
    draft = type(large)(config)
    kept = {k: v for k, v in large.state_dict().items() if not ((m := _LAYER_KEY.search(k)) and int(m.group(1)) >= layers)}
    draft.load_state_dict(kept, strict=True)
    draft.generation_config = copy.deepcopy(large.generation_config)
    return draft.to(device=parameter.device, dtype=parameter.dtype).eval()


def _fingerprint(model) -> str:
    """A digest of the model's config and of a sample of its weights (enough to tell checkpoints apart)."""
    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for _, tensor in sorted(model.state_dict().items())[:: 7]:
        digest.update(tensor.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def make_draft(
    large_model,
    layers: int,
    distill_tokens: int = 0,
    *,
    tokenizer=None,
    prompts: Sequence[str] | None = None,
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
):
    """An early-exit draft of ``large_model`` for :class:`ModelSwitch`, optionally distilled.

    Args:
        large_model: a decoder-only transformers model laid out as ``model.layers`` + ``model.norm``.
        layers: decoder layers kept, ``1 <= layers < `` the model's.
        distill_tokens: ``0`` for plain early exit; otherwise the large model first writes about this
            many tokens of replies to ``prompts`` (sampled at temperature 1 with min-p 0.05), then the
            draft's layers and final norm are trained ``epochs`` times over that text to match the large
            model's next-token distributions (forward KL); embeddings and head stay the large model's.
        tokenizer: the large model's tokenizer (read from its folder when omitted).
        prompts: requests for the large model to answer (chat); default: a built-in varied set.
        cache: keep the distilled draft under ``$ENTRODEC_CACHE/drafts`` and reuse it next time.
        progress: show progress bars for writing and distilling.

    The draft's ``config.entrodec_draft`` records the recipe and the held-out KL before and after.

    Example:
        >>> from entrodec.decoding import load_model, make_draft                # doctest: +SKIP
        >>> large, tok = load_model()                                           # doctest: +SKIP
        >>> draft = make_draft(large, layers=8, distill_tokens=16_000)         # doctest: +SKIP
        >>> draft.config.entrodec_draft["kl_after"] < draft.config.entrodec_draft["kl_before"]  # doctest: +SKIP
        True
    """
    at_least("distill_tokens", distill_tokens, 0)
    at_least("epochs", epochs, 1)
    at_least("batch_size", batch_size, 1)
    in_range("lr", lr, 0.0, open_low=True)
    draft = early_exit(large_model, layers)
    recipe = {"format": DRAFT_FORMAT, "layers": layers, "distill_tokens": distill_tokens}
    if distill_tokens == 0:
        draft.config.entrodec_draft = recipe
        return draft
    prompts = list(prompts) if prompts is not None else DISTILL_PROMPTS
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("`prompts` must be a non-empty list of non-empty strings")
    recipe.update(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, prompts=prompts)
    key = hashlib.sha256((_fingerprint(large_model) + json.dumps(recipe, sort_keys=True)).encode()).hexdigest()[:16]
    folder = cache_dir() / "drafts" / f"L{layers}-N{distill_tokens}-{key}"
    parameter = next(large_model.parameters())
    if cache and (folder / "config.json").is_file():
        print(f"entrodec: using the distilled draft cached in {folder}", file=sys.stderr)
        cached = type(large_model).from_pretrained(folder, dtype=parameter.dtype)
        return cached.to(parameter.device).eval()
    tokenizer = tokenizer if tokenizer is not None else _tokenizer_of(large_model)
    sequences, prompt_lengths = teacher_text(large_model, tokenizer, distill_tokens, prompts, seed, batch_size, progress)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    report = distill(large_model, draft, sequences, prompt_lengths, pad, epochs, lr, batch_size, seed, progress)
    draft.config.entrodec_draft = {**recipe, **report}
    if cache:
        build_folder_once(folder, draft.save_pretrained)
    return draft


def _tokenizer_of(model):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.name_or_path, local_files_only=True)
    except (OSError, ValueError, TypeError):
        raise ValueError(
            "make_draft(..., distill_tokens=N) needs the large model's tokenizer to write its text: pass tokenizer=..."
        ) from None
