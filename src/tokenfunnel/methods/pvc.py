"""PVC-style progressive compression of videos (an image is a one-frame video): OIM inside the vision encoder per
frame, near-identical frames folded together and unchanged tokens dropped after it, then a staged, attention-free
spectral prune inside the language model. After PVC (OpenGVLab, CVPR 2025), training-free;
the stages and defaults follow our design notes, the thresholds were chosen on the easyvqa-clips-dev split.

The budget follows the video, not a requested ``keep``: a static clip folds into one frame, a busy one keeps many.
``handle.report()`` gives the realised ``keep`` and what each stage removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokenfunnel.methods.common import oim_steps
from tokenfunnel.methods.luvc import spectral_score
from tokenfunnel.ops.budget import check_schedule, stages
from tokenfunnel.ops.temporal import FrameMerge, changed_tokens, merge_frames
from tokenfunnel.runtime.state import ScoreInput

PVC_SCHEDULE = ((0.0, 1.0), (0.25, 0.7), (0.5, 0.5), (0.75, 0.4))  # the design's layers 0/8/16/24 of 32
NO_PRUNING = ((0.0, 1.0),)


@dataclass(frozen=True)
class PVCConfig:
    """Options of PVC; every stage can be switched off.

    spatial: fraction of each frame's patch grid OIM keeps (0.5 = 2:1; 1.0 switches spatial merging off).
    frame_threshold: a frame whose mean token cosine with the running merged frame exceeds this is folded into
        it (weight = that similarity); None switches frame merging off.
    token_threshold: inside the kept frames, a token whose cosine with the last kept token at its grid position
        exceeds this is dropped; None switches token-level pruning off.
    schedule: (depth fraction, kept fraction) pairs for the language model: from layer int(depth * L) on, that
        fraction of the visual tokens entering it remains, ranked by the spectral score.
    encoder_start, cutoff: as in LUVC (first encoder layer fraction for OIM; low-pass cutoff of the score).
    """

    spatial: float = 0.5
    frame_threshold: float | None = 0.65
    token_threshold: float | None = None
    schedule: tuple[tuple[float, float], ...] = PVC_SCHEDULE
    encoder_start: float = 0.5
    cutoff: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.spatial <= 1:
            raise ValueError(f"spatial must be in (0, 1] (fraction of each frame's grid kept), got {self.spatial}")
        for name in ("frame_threshold", "token_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1] or None (off), got {value}")
        check_schedule(self.schedule)
        object.__setattr__(self, "schedule", tuple((float(d), float(k)) for d, k in self.schedule))
        if not 0 <= self.encoder_start < 1:
            raise ValueError(f"encoder_start must be in [0, 1), got {self.encoder_start}")
        if not 0 < self.cutoff <= 1:
            raise ValueError(f"cutoff must be in (0, 1], got {self.cutoff}")

    @property
    def temporal(self) -> bool:
        return self.frame_threshold is not None or self.token_threshold is not None


@dataclass(frozen=True)
class FrameMergeConfig(PVCConfig):
    """Frame merging alone: no spatial merging, no pruning inside the language model."""

    spatial: float = 1.0
    token_threshold: float | None = None
    schedule: tuple[tuple[float, float], ...] = NO_PRUNING


@dataclass(frozen=True)
class TokenStaticConfig(PVCConfig):
    """Token-level pruning of unchanged tokens alone (what serving engines do for video)."""

    spatial: float = 1.0
    frame_threshold: float | None = None
    token_threshold: float | None = 0.7
    schedule: tuple[tuple[float, float], ...] = NO_PRUNING


class PVC:
    name = "pvc"
    proportional = False
    ragged = True  # samples of a batch may keep different counts (their videos differ); see runtime.decoder

    def __init__(self, config: PVCConfig) -> None:
        self.config = config
        # what the runtime calls between the encoder and the language model; None when both stages are off
        self.temporal = self._temporal if config.temporal else None

    def check(self, adapter) -> None:
        # a video is a sequence of <image> runs (LLaVA family) or Qwen2-VL's own video input; elsewhere the several
        # images of a prompt are tiles of one picture, and folding tiles together would be wrong
        if self.config.temporal and adapter.family not in ("llava", "qwen2_vl"):
            raise ValueError(
                f"{self.name}'s temporal stages need the frames of a video (LLaVA family: one <image> run per frame; "
                f"Qwen2-VL: pixel_values_videos); {adapter.family}'s images are tiles, so pass frame_threshold=None, "
                "token_threshold=None"
            )

    def encoder_steps(self, h: int, w: int, layers: int) -> dict[int, tuple[str, int]]:
        return oim_steps(h, w, layers, self.config.spatial, self.config.encoder_start)

    def _temporal(self, frames: Tensor) -> tuple[FrameMerge, Tensor]:
        """One video's tokens (T, N, D) after the projector -> the merged frames and which of their tokens stay."""
        c = self.config
        # threshold 1.0 folds nothing but still measures each frame against the one before, which report() shows
        fm = merge_frames(frames, 1.0 if c.frame_threshold is None else c.frame_threshold)
        if c.token_threshold is None:
            keep = fm.merged.new_ones(fm.merged.shape[:2], dtype=bool)
        else:
            keep = changed_tokens(fm.merged, c.token_threshold)
        return fm, keep

    def llm_counts(self, entering: int, original: int, layers: int) -> list[int]:
        return stages(entering, layers, self.config.schedule)

    def score(self, inputs: ScoreInput) -> Tensor:
        return spectral_score(inputs, self.config.cutoff)
