"""Analytic FLOPs of a prefill from the tokens entering each layer: decoder-only LMs and ViT vision encoders.

Counts multiply-adds as 2 FLOPs: the q/k/v/o projections and the MLP per token, plus attention (scores and
weighted sum) over the tokens each query can see — causal in the LM, all tokens in the encoder. Norms, RoPE,
the patch embedding and the LM head are left out: they are small or do not depend on how many tokens are kept.
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
    """FLOPs of a decoder prefill whose layers receive ``tokens_per_layer`` tokens (text and visual)."""
    return sum(layer_flops(t, config) for t in tokens_per_layer)


def context_flops(frozen: list[int], visual: list[int], config) -> float:
    """FLOPs LUVC's frozen context adds to a prefill whose layers hold ``frozen`` frozen tokens and ``visual`` visual
    tokens: each layer projects its frozen tokens' keys and values, and its visual tokens attend them (counted as if
    each saw all of them, an upper bound)."""
    d = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    pairs = zip(frozen, visual, strict=True)
    return sum(2 * f * d * head_dim * 2 * kv + 2 * 2 * v * f * heads * head_dim for f, v in pairs)


def vision_width(config) -> tuple[int, int]:
    """(width, summed inner width of the MLP's matrices) of a ViT layer, across config styles.

    CLIP/SigLIP name the MLP width ``intermediate_size``; DINOv2 and Qwen2-VL give an ``mlp_ratio`` (Qwen2-VL's
    ``embed_dim`` is the width inside the tower, its ``hidden_size`` the merger's output). Gated MLPs have three
    matrices: DINOv2's SwiGLU of ``2/3`` the width rounded up to a multiple of 8 (as transformers builds it) and
    Qwen2.5-VL's. Qwen2.5-VL's windowed attention layers are counted as full attention (an upper bound).
    """
    d = getattr(config, "embed_dim", None) or config.hidden_size
    ff = getattr(config, "intermediate_size", None) or int(d * config.mlp_ratio)
    if getattr(config, "use_swiglu_ffn", False):
        return d, 3 * ((int(ff * 2 / 3) + 7) // 8 * 8)
    if getattr(config, "model_type", "").startswith("qwen2_5"):
        return d, 3 * ff
    return d, 2 * ff


def vit_layer_flops(tokens: int, config) -> float:
    """FLOPs of one ViT encoder layer over ``tokens`` tokens: q/k/v/o projections, the MLP, and non-causal
    attention (every token sees every token). Norms, layer scales and biases are left out."""
    d, mlp_width = vision_width(config)
    projections = 2 * tokens * 4 * d * d
    mlp = 2 * tokens * d * mlp_width
    attention = 2 * 2 * tokens * tokens * d
    return projections + mlp + attention


def encoder_flops(tokens_per_layer: list[int], config) -> float:
    """FLOPs of a vision encoder whose layers receive ``tokens_per_layer`` tokens (one image)."""
    return sum(vit_layer_flops(t, config) for t in tokens_per_layer)
