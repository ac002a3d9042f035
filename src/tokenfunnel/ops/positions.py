"""Positions of left-padded prompts."""

from __future__ import annotations

from torch import Tensor


def prompt_positions(mask: Tensor) -> Tensor:
    """Positions that count only real tokens, so that a left-padded row matches the same prompt alone."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)
