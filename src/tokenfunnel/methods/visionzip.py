"""VisionZip (CVPR 2025): after the encoder, keep the dominant tokens and fold the rest into a few contextual ones.

Dominant tokens are the patches the class token attends to most at the last layer feeding the projector (with no
class token, the attention each patch receives on average), computed by hand from that layer's q/k so SDPA runs
unchanged. The remaining patches are grouped onto contextual targets spread evenly among them, each joining the
target whose key it is most alike, and averaged. The paper's split: 54 dominant + 10 contextual for 64 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenfunnel.methods.common import EncoderSide, check_keep, tokens_for


@dataclass(frozen=True)
class VisionZipConfig:
    """keep: fraction of the patches that leave the encoder. contextual: share of them that are contextual."""

    keep: float = 0.25
    contextual: float = 10 / 64

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if not 0 <= self.contextual < 1:
            raise ValueError(f"contextual must be a share in [0, 1), got {self.contextual}")


class VisionZip(EncoderSide):
    name = "visionzip"

    def __init__(self, config: VisionZipConfig) -> None:
        self.config = config

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, tuple[int, int]]]:
        n = tokens_for(self.config.keep, h, w, self.name)
        if n == h * w:
            return {}
        contextual = max(1, round(self.config.contextual * n))
        return {layers - 1: ("zip", (n - contextual, contextual))}
