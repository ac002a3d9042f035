"""Positions of left-padded prompts, and where an M-RoPE prompt continues."""

from __future__ import annotations

from torch import Tensor


def prompt_positions(mask: Tensor) -> Tensor:
    """Positions that count only real tokens, so that a left-padded row matches the same prompt alone."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def mrope_next(positions: Tensor) -> Tensor:
    """(3, B) where decoding continues after an M-RoPE prompt (3, B, T): every row from the largest position in any
    row, + 1, as Qwen2-VL's ``get_rope_index`` deltas number it (a video's temporal row can run past its text)."""
    return (positions.amax(dim=(0, 2)) + 1).expand(positions.shape[0], -1)
