"""Analytic FLOPs of a decoder-only language model's prefill from the tokens entering each layer.

Counts multiply-adds as 2 FLOPs: the q/k/v/o projections and the gated MLP per token, plus causal attention
(scores and weighted sum) over the tokens each query can see. Norms, RoPE and the LM head are left out: they are
small and do not depend on the visual tokens.
"""

from __future__ import annotations


def layer_flops(tokens: int, config) -> float:
    """FLOPs of one Llama/Qwen2-style decoder layer over ``tokens`` tokens (prefill, causal)."""
    d = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    ff = config.intermediate_size
    projections = 2 * tokens * d * head_dim * (2 * heads + 2 * kv)
    mlp = 2 * tokens * 3 * d * ff
    visible = tokens * (tokens + 1) / 2  # causal: query i sees i + 1 keys
    attention = 2 * 2 * visible * heads * head_dim
    return projections + mlp + attention


def prefill_flops(tokens_per_layer: list[int], config) -> float:
    return sum(layer_flops(t, config) for t in tokens_per_layer)
