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
