"""FastV (Chen et al., ECCV 2024): at decoder layer K, drop the visual tokens the last prompt token attends to least.

The reference code reads the attention weights of layer K-1 and needs eager attention. Here the one query row is
recomputed from layer K's own q/k projections of its input (``ops.attention``), so SDPA and FlashAttention run
unchanged and no layer runs twice. ``keep`` is FLOP-equivalent: all visual tokens enter layers 0..K-1, and the
count kept from K on is solved so the mean over all layers is ``keep``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokenfunnel.methods.common import SingleDrop, check_keep
from tokenfunnel.ops.attention import last_query_attention
from tokenfunnel.runtime.state import ScoreInput


@dataclass(frozen=True)
class FastVConfig:
    """keep: FLOP-equivalent fraction of visual tokens. layer: the decoder layer (K) where tokens are dropped."""

    keep: float = 0.25
    layer: int = 2

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.layer < 0:
            raise ValueError(f"layer must be a decoder layer index >= 0, got {self.layer}")


def last_token_scores(inputs: ScoreInput) -> Tensor:
    """(B, n) attention each visual token receives from the last prompt token at the layer about to run."""
    weights = last_query_attention(inputs.layer, inputs.sequence, inputs.valid, inputs.rope)
    return weights.gather(1, inputs.at)


class FastV(SingleDrop):
    name = "fastv"

    def score(self, inputs: ScoreInput) -> Tensor:
        return last_token_scores(inputs)
