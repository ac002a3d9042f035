"""DART (2025): at decoder layer K, keep the visual tokens least like a few pivot tokens (drop duplicates).

Pivots are the visual and text tokens with the largest key norm at that layer (4 + 4 by default, as in DART's
Qwen2-VL scripts); every other visual token is scored by its highest cosine similarity to a pivot, and the least
similar are kept. The reference splits the budget across pivots; taking the maximum over pivots is our
simplification. No attention weights are read. ``keep`` is FLOP-equivalent as in FastV.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenfunnel.methods.common import SingleDrop, check_keep
from tokenfunnel.ops.attention import keys
from tokenfunnel.ops.select import gather_tokens
from tokenfunnel.runtime.state import ScoreInput


@dataclass(frozen=True)
class DARTConfig:
    """keep: FLOP-equivalent fraction. layer: where tokens are dropped. pivots/text_pivots: how many of each."""

    keep: float = 0.25
    layer: int = 2
    pivots: int = 4
    text_pivots: int = 4

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.layer < 0 or self.pivots < 1 or self.text_pivots < 0:
            raise ValueError(
                f"need layer >= 0, pivots >= 1, text_pivots >= 0; got {self.layer}, {self.pivots}, {self.text_pivots}"
            )


class DART(SingleDrop):
    name = "dart"

    def score(self, inputs: ScoreInput) -> Tensor:
        c = self.config
        seq, at, valid = inputs.sequence, inputs.at, inputs.valid
        norms = keys(inputs.layer, seq).float().norm(dim=(1, 3))  # (B, T); RoPE is a rotation: norms unchanged
        visual = torch.zeros_like(valid).scatter(1, at, True)
        vis_norm = norms.gather(1, at)
        image_pivots = vis_norm.topk(min(c.pivots, at.shape[1]), dim=1).indices  # indices into at
        pivot_at = [at.gather(1, image_pivots)]
        text = valid & ~visual
        if c.text_pivots and bool(text.any()):
            k = min(c.text_pivots, int(text.sum(1).min()))
            pivot_at.append(norms.masked_fill(~text, float("-inf")).topk(k, dim=1).indices)
        x = F.normalize(inputs.layer.input_layernorm(seq).float(), dim=-1)
        pivots = gather_tokens(x, torch.cat(pivot_at, dim=1))  # (B, P, D)
        similarity = (gather_tokens(x, at) @ pivots.transpose(1, 2)).amax(dim=-1)  # (B, n)
        scores = -similarity
        return scores.scatter(1, image_pivots, float("inf"))
