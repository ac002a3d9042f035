"""Pooling baseline: average the encoder's output grid into fewer, larger cells (2D average pooling).

Applied after the last encoder layer that feeds the projector, on non-overlapping bins that tile the grid; the
pooled grid is the one closest in shape to the original whose size is within 2% (at least one token) of
``keep`` x the patches. A keep no such grid meets is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenfunnel.methods.common import EncoderSide, check_keep, grid_for


@dataclass(frozen=True)
class PoolConfig:
    """keep: fraction of the patch grid's tokens left after pooling."""

    keep: float = 0.25

    def __post_init__(self) -> None:
        check_keep(self.keep)


class Pool(EncoderSide):
    name = "pool"

    def __init__(self, config: PoolConfig) -> None:
        self.config = config

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, tuple[int, int]]]:
        grid = grid_for(self.config.keep, h, w, self.name)
        return {} if grid == (h, w) else {layers - 1: ("pool", grid)}
