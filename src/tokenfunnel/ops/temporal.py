"""Redundancy across time: fold near-identical frames together, and find tokens that did not change.

Both work on one video's visual tokens ``(T, N, D)`` (frames in order, the same N grid positions in each) and never
look at other samples, so a batch gives what single runs give.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _check(frames: Tensor, threshold: float) -> None:
    if frames.dim() != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected frames of shape (T, N, D) with T >= 1, got {tuple(frames.shape)}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"a similarity threshold must be in [0, 1], got {threshold}")


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-token cosine (N,) of two (N, D) frames, in float32, clamped to [-1, 1] against rounding."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).clamp(-1, 1)


@dataclass
class FrameMerge:
    """Which frames were folded into which merged frame."""

    merged: Tensor  # (G, N, D) the merged frames, in time order
    first: list[int]  # (G,) the first input frame of each merged frame: its tokens take that frame's positions
    group: list[int]  # (T,) the merged frame each input frame went into
    similarity: list[float]  # (T,) mean token cosine of each frame with the running merged frame (1.0 for frame 0)

    @property
    def sizes(self) -> list[int]:
        """Input frames folded into each merged frame."""
        return [self.group.count(g) for g in range(len(self.first))]


def merge_frames(frames: Tensor, threshold: float) -> FrameMerge:
    """Fold each frame into the running merged frame when their mean token cosine exceeds ``threshold``.

    The fold weighs the running frame by the similarity s itself (merged = s * merged + (1 - s) * frame): the more
    alike, the less a frame moves the average. Otherwise the frame starts a new merged frame. The first frame is
    always kept; threshold 1.0 keeps every frame (nothing is more than identical).
    """
    _check(frames, threshold)
    current = frames[0].float()
    merged, first, group, similarity = [], [0], [0], [1.0]
    for t in range(1, frames.shape[0]):
        s = float(_cosine(frames[t], current).mean())
        similarity.append(s)
        if s > threshold:
            current = s * current + (1 - s) * frames[t].float()
        else:
            merged.append(current)
            current = frames[t].float()
            first.append(t)
        group.append(len(first) - 1)
    merged.append(current)
    return FrameMerge(torch.stack(merged).to(frames.dtype), first, group, similarity)


def changed_tokens(frames: Tensor, threshold: float) -> Tensor:
    """(T, N) True where a token differs from the last kept token at its grid position (cosine <= ``threshold``).

    Frame 0 is kept whole. Comparing with the last *kept* token rather than the previous frame's means slow drift
    still shows once it has added up, instead of being dropped step by small step forever.
    """
    _check(frames, threshold)
    keep = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    reference = frames[0].clone()
    for t in range(1, frames.shape[0]):
        keep[t] = _cosine(frames[t], reference) <= threshold
        reference[keep[t]] = frames[t][keep[t]]
    return keep
