"""Random baseline: a random subset of the visual tokens, dropped before the first decoder layer.

The subset is drawn once per grid size from ``seed`` and is the same for every image, so a batch equals its
samples run alone and reruns agree. ``keep`` is the fraction kept, the same at every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tokenfunnel.methods.common import DecoderOnly, check_keep
from tokenfunnel.runtime.state import ScoreInput


@dataclass(frozen=True)
class RandomConfig:
    """keep: fraction of visual tokens kept at every decoder layer. seed: which random subset."""

    keep: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        check_keep(self.keep)


class RandomDrop(DecoderOnly):
    name = "random"

    def __init__(self, config: RandomConfig) -> None:
        self.config = config

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        return [min(entering, round(self.config.keep * original))] * layers

    def score(self, inputs: ScoreInput) -> Tensor:
        cells = inputs.cells
        values = torch.rand(int(cells.max()) + 1, generator=torch.Generator().manual_seed(self.config.seed))
        return values.to(cells.device)[cells]
