"""InternVL's vision layer (``InternVLVisionLayer``) split into its attention half and its MLP half, like ``vit.py``.

Pre-norm with layer scales: x + lambda_1 * attn(layernorm_before(x)), then x + lambda_2 * mlp(layernorm_after(x)).
"""

from __future__ import annotations

from torch import Tensor, nn


def internvl_attention(layer: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    out, _ = layer.attention(layer.layernorm_before(x), attention_mask=mask)
    return layer.lambda_1 * out + x


def internvl_mlp(layer: nn.Module, x: Tensor) -> Tensor:
    out = layer.dropout(layer.mlp(layer.layernorm_after(x)))
    if layer.lambda_2 is not None:
        out = layer.lambda_2 * out
    return out + x
