"""PyramidDrop (CVPR 2025): stage-wise drops at fixed depths, each keeping the same fraction of what is left.

Ranking as in FastV: attention from the last prompt token, recomputed by hand so SDPA runs unchanged. The paper's
stages are 1/4, 1/2 and 3/4 of the depth with ratio 0.5 (about keep 0.47); here the ratio is solved so the mean
over layers is ``keep``. A keep below what the first stage allows (all tokens up to it) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokenfunnel.methods.common import DecoderOnly, check_keep, decoder_layers
from tokenfunnel.methods.fastv import last_token_scores
from tokenfunnel.ops.budget import pyramid
from tokenfunnel.runtime.state import ScoreInput


@dataclass(frozen=True)
class PDropConfig:
    """keep: FLOP-equivalent fraction of visual tokens. stages: depth fractions of the stage boundaries."""

    keep: float = 0.5
    stages: tuple[float, ...] = (0.25, 0.5, 0.75)

    def __post_init__(self) -> None:
        check_keep(self.keep)
        stages = tuple(self.stages)
        if not stages or list(stages) != sorted(set(stages)) or not 0 <= stages[0] or stages[-1] >= 1:
            raise ValueError(f"stages must be increasing depth fractions in [0, 1), got {self.stages}")
        object.__setattr__(self, "stages", stages)


class PDrop(DecoderOnly):
    name = "pdrop"

    def __init__(self, config: PDropConfig) -> None:
        self.config = config

    def boundaries(self, layers: int) -> list[int]:
        at = [int(f * layers) for f in self.config.stages]
        if len(set(at)) != len(at):
            raise ValueError(f"stages {self.config.stages} collapse onto the same layer of a {layers}-layer model")
        return at

    def check(self, adapter) -> None:
        layers = decoder_layers(adapter)
        try:
            pyramid(1000, layers, self.config.keep * 1000, self.boundaries(layers))
        except ValueError as err:
            raise ValueError(f"pdrop cannot reach keep {self.config.keep}: {err} (option stages=...)") from None

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        return pyramid(entering, layers, self.config.keep * original, self.boundaries(layers))

    def score(self, inputs: ScoreInput) -> Tensor:
        return last_token_scores(inputs)
