"""Pre-norm ViT encoder layers split into their attention half and MLP half, so tokens can be merged in between.

Each function reproduces the layer's own forward exactly when called back to back; only the modules of the
layer are used, nothing is re-implemented. A layer class not listed here is not supported for in-encoder merging.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from tokenfunnel.adapters.vit_internvl import internvl_attention, internvl_mlp


def _dinov2_attention(layer: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    out, _ = layer.attention(layer.norm1(x), attention_mask=mask)
    return layer.drop_path(layer.layer_scale1(out)) + x


def _dinov2_mlp(layer: nn.Module, x: Tensor) -> Tensor:
    return layer.drop_path(layer.layer_scale2(layer.mlp(layer.norm2(x)))) + x


def _clip_attention(layer: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    out, _ = layer.self_attn(hidden_states=layer.layer_norm1(x), attention_mask=mask)
    return x + out


def _clip_mlp(layer: nn.Module, x: Tensor) -> Tensor:
    return x + layer.mlp(layer.layer_norm2(x))


# layer class name -> (attention half, MLP half); CLIP, SigLIP and Idefics3 share one layout
HALVES: dict[str, tuple[Callable, Callable]] = {
    "Dinov2Layer": (_dinov2_attention, _dinov2_mlp),
    "CLIPEncoderLayer": (_clip_attention, _clip_mlp),
    "SiglipEncoderLayer": (_clip_attention, _clip_mlp),
    "Siglip2EncoderLayer": (_clip_attention, _clip_mlp),
    "Idefics3EncoderLayer": (_clip_attention, _clip_mlp),
    "SmolVLMEncoderLayer": (_clip_attention, _clip_mlp),
    "InternVLVisionLayer": (internvl_attention, internvl_mlp),
}


def halves(layer: nn.Module) -> tuple[Callable, Callable]:
    name = type(layer).__name__
    if name not in HALVES:
        raise TypeError(
            f"merging inside {name} layers is not supported (supported: {', '.join(sorted(HALVES))}); "
            "use a method that compresses after the encoder"
        )
    return HALVES[name]


# layer class name -> (pre-attention norm, attention module), for methods that compare tokens by their keys
_QK: dict[str, tuple[str, str]] = {
    "Dinov2Layer": ("norm1", "attention"),
    "CLIPEncoderLayer": ("layer_norm1", "self_attn"),
    "SiglipEncoderLayer": ("layer_norm1", "self_attn"),
    "Siglip2EncoderLayer": ("layer_norm1", "self_attn"),
    "Idefics3EncoderLayer": ("layer_norm1", "self_attn"),
    "SmolVLMEncoderLayer": ("layer_norm1", "self_attn"),
}


def query_keys(layer: nn.Module, x: Tensor, queries: int | None = None) -> tuple[Tensor | None, Tensor]:
    """The layer's queries and keys (I, heads, N, head_dim) for its input ``x`` (I, N, C), without running it.

    ``queries``: how many leading tokens need a query (None: all, 0: none, so the query projection is skipped).
    """
    name = type(layer).__name__
    if name not in _QK:
        raise TypeError(f"reading keys of {name} layers is not supported (supported: {', '.join(sorted(_QK))})")
    norm, attn = (getattr(layer, a) for a in _QK[name])
    heads = getattr(attn, "num_heads", None) or attn.num_attention_heads
    i, n, _ = x.shape
    h = norm(x)
    k = attn.k_proj(h).view(i, n, heads, -1).transpose(1, 2)
    if queries == 0:
        return None, k
    h = h if queries is None else h[:, :queries]
    q = attn.q_proj(h).view(i, h.shape[1], heads, -1).transpose(1, 2)
    return q, k
