"""Attention a decoder layer *would* compute, recomputed by hand for the few query rows a method needs.

FastV-style methods rank visual tokens by the attention they receive from the last prompt token. Reading it from
the model would need eager attention (SDPA and FlashAttention never materialise the weights); recomputing one
query row from the layer's own q/k projections costs a (T x D) key projection and nothing else.
Works for Llama/Qwen2-style decoder layers (``input_layernorm``, ``self_attn.{q,k}_proj``), RoPE applied with the
(cos, sin) the layer receives, grouped-query heads repeated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, T, d); cos/sin (B, T, d)."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


def _heads(layer: nn.Module) -> tuple[int, int, int]:
    attn = layer.self_attn
    config = attn.config
    heads = config.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or config.hidden_size // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return heads, kv, head_dim


def keys(layer: nn.Module, hidden: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(B, H_kv, T, d) the layer's keys for ``hidden`` (B, T, D), rotated when ``rope`` is given."""
    _, kv, head_dim = _heads(layer)
    b, t, _ = hidden.shape
    k = layer.self_attn.k_proj(layer.input_layernorm(hidden)).view(b, t, kv, head_dim).transpose(1, 2)
    return k if rope is None else _rope(k, *rope)


def last_query_attention(
    layer: nn.Module, hidden: Tensor, valid: Tensor, rope: tuple[Tensor, Tensor], queries: int = 1
) -> Tensor:
    """(B, T) attention the last ``queries`` tokens pay to every token, softmax over the keys each may see,
    averaged over heads (and over the query rows). ``valid`` (B, T) is False at padding."""
    heads, kv, head_dim = _heads(layer)
    b, t, _ = hidden.shape
    normed = layer.input_layernorm(hidden)
    q = layer.self_attn.q_proj(normed[:, t - queries :]).view(b, queries, heads, head_dim).transpose(1, 2)
    q = _rope(q, rope[0][:, t - queries :], rope[1][:, t - queries :])
    k = layer.self_attn.k_proj(normed).view(b, t, kv, head_dim).transpose(1, 2)
    k = _rope(k, *rope).repeat_interleave(heads // kv, dim=1)
    logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(head_dim)  # (B, H, queries, T)
    rows = torch.arange(t - queries, t, device=hidden.device)[:, None]
    allowed = valid[:, None, None, :] & (torch.arange(t, device=hidden.device) <= rows)
    weights = logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return weights.mean(dim=(1, 2))
