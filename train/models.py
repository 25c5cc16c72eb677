"""The model a run trains: the default model, a tiny random-weight one for smoke tests, or a path."""

from __future__ import annotations

import torch

TINY = "tiny-random"


def build_model(name: str, seed: int, device: torch.device):
    """``(model, tokenizer)`` in float32 on ``device``. ``"default"`` is SmolLM2-135M-Instruct; ``"tiny-random"``
    a 2-layer Llama with the default tokenizer and weights drawn from ``seed``."""
    from ..decoding.loading import load_model, load_tokenizer

    if name != TINY:
        return load_model(None if name == "default" else name, device=device, dtype=torch.float32)
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(device).eval(), tokenizer
