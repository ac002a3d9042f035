"""Every stride-th row and column of each image's token grid: a sparse, even sample of the picture."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def lattice(cells: Tensor, images: list[tuple[int, int]], stride: int) -> Tensor:
    """(B, n) True where ``cells`` (B, n), each an index into a sample's images' grids laid end to end (-1: no
    token), sits on a row and a column of its image that are multiples of ``stride`` (stride 1: every cell)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    flags = []
    for h, w in images:
        rows = torch.arange(h, device=cells.device) % stride == 0
        cols = torch.arange(w, device=cells.device) % stride == 0
        flags.append((rows[:, None] & cols[None, :]).flatten())
    table = torch.cat(flags + [torch.zeros(1, dtype=torch.bool, device=cells.device)])  # -1 reads the spare False
    return table[cells]


def lattice_size(images: list[tuple[int, int]], stride: int) -> int:
    """How many cells of a sample's images ``lattice`` marks."""
    return sum(math.ceil(h / stride) * math.ceil(w / stride) for h, w in images)
