"""Downsampling baseline: show the vision encoder a smaller image (VTC-Bench: it beats many compression methods).

The pixels are resized (bilinear, antialiased) to the patch grid closest in shape to the original whose size is
within 2% (at least one token) of ``keep`` x the patches, and position embeddings are interpolated. Each token then
covers a bin of the original patches and takes the placeholder of its centre one. The encoder itself gets cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenfunnel.methods.common import EncoderSide, check_keep, grid_for


@dataclass(frozen=True)
class DownsampleConfig:
    """keep: fraction of the patch grid's tokens the smaller image gives."""

    keep: float = 0.25

    def __post_init__(self) -> None:
        check_keep(self.keep)


class Downsample(EncoderSide):
    name = "downsample"

    def __init__(self, config: DownsampleConfig) -> None:
        self.config = config

    def input_grid(self, h: int, w: int) -> tuple[int, int]:
        return grid_for(self.config.keep, h, w, self.name)

    def encoder_steps(self, h: int, w: int, layers: int) -> dict:
        return {}
