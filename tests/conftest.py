import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def default_model():
    """SmolLM2-135M-Instruct (converted once and cached, then ~1 s per load)."""
    from entrodec.decoding import load_model

    return load_model()


@pytest.fixture(scope="session")
def tiny_model(default_model):
    """A 2-layer random-weight Llama with the default model's vocabulary and tokenizer: fast, and
    its logits are flat enough that sampling exercises every processor."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = default_model
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    return LlamaForCausalLM(config).eval(), tokenizer
