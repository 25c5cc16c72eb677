"""Our processors inside Hugging Face generate() and pipelines."""

import pytest
import torch
from transformers import LogitsProcessorList, pipeline

from entrodec.decoding import MinP, SamplerChain, Temperature, TopH


def test_inside_model_generate(tiny_model):
    model, tok = tiny_model
    batch = tok(["hello", "a longer prompt here"], return_tensors="pt", padding=True, padding_side="left")
    processors = LogitsProcessorList([Temperature(1.5), TopH(alpha=0.4)])
    torch.manual_seed(0)
    out = model.generate(**batch, logits_processor=processors, do_sample=True, top_k=0, max_new_tokens=6)
    assert out.shape == (2, batch["input_ids"].shape[1] + 6)


def test_truncation_is_respected_by_hf_sampling(tiny_model):
    """With TopH at a tiny alpha every sampled token must be the argmax: HF honoured our mask."""
    model, tok = tiny_model
    batch = tok(["hello"], return_tensors="pt")
    greedy = model.generate(**batch, do_sample=False, max_new_tokens=6)
    torch.manual_seed(1)
    sampled = model.generate(
        **batch, logits_processor=LogitsProcessorList([TopH(alpha=1e-6)]), do_sample=True, top_k=0,
        max_new_tokens=6,
    )
    assert torch.equal(sampled, greedy)


def test_chain_inside_pipeline(tiny_model):
    model, tok = tiny_model
    generator = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    chain = SamplerChain([Temperature(0.7), MinP(0.1)])
    out = generator("Hello", logits_processor=LogitsProcessorList([chain]), do_sample=True, top_k=0,
                    max_new_tokens=5, return_full_text=False)
    assert isinstance(out[0]["generated_text"], str)


@pytest.mark.model
def test_pipeline_with_default_model_chat(default_model):
    model, tok = default_model
    generator = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    out = generator(messages, logits_processor=LogitsProcessorList([TopH(alpha=0.05)]), do_sample=True, top_k=0,
                    max_new_tokens=12)
    assert "Paris" in out[0]["generated_text"][-1]["content"]
