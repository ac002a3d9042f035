"""ToMe (Bolya et al., ICLR 2023): bipartite soft matching inside every encoder layer, between attention and MLP.

Tokens are compared by the layer's keys averaged over heads; even tokens are matched to odd ones and the r best
pairs merge (size-weighted), with proportional attention (log size added to the logits) by default. The class
token is never merged. r is the same at every layer feeding the projector (the remainder goes to the first
layers), so exactly round(keep x patches) tokens leave the encoder; the tokens are no longer a grid, and each
takes the placeholder of the patch its group is represented by.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenfunnel.methods.common import EncoderSide, check_keep, tokens_for


@dataclass(frozen=True)
class ToMeConfig:
    """keep: fraction of the patches that leave the encoder. proportional: ToMe's proportional attention."""

    keep: float = 0.25
    proportional: bool = True

    def __post_init__(self) -> None:
        check_keep(self.keep)


class ToMe(EncoderSide):
    name = "tome"

    def __init__(self, config: ToMeConfig) -> None:
        self.config = config
        self.proportional = config.proportional

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, int]]:
        n = h * w
        drop = n - tokens_for(self.config.keep, h, w, self.name)
        if drop == 0:
            return {}
        steps, left = {}, n
        for i in range(layers):
            r = drop // layers + (1 if i < drop % layers else 0)
            if r > left // 2:
                raise ValueError(
                    f"tome cannot reach keep {self.config.keep}: merging {drop} of {n} tokens over {layers} layers "
                    f"needs {r} merges of {left} tokens at layer {i}, and bipartite matching allows {left // 2}"
                )
            if r:
                steps[i] = ("tome", r)
            left -= r
        return steps
