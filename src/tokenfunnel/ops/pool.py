"""Average pooling of a token grid into non-overlapping bins, with the coverage of each pooled row and column.

Bins tile the grid exactly (bin i of n -> m covers [i*n//m, (i+1)*n//m - 1]), unlike adaptive pooling whose bins
overlap when m does not divide n: every original patch then belongs to exactly one pooled token.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bins(n: int, m: int, device=None) -> Tensor:
    """(m, 2) first and last index of each of m bins tiling 0..n-1; needs 1 <= m <= n."""
    if not 1 <= m <= n:
        raise ValueError(f"cannot split {n} rows or columns into {m} bins; need 1 <= {m} <= {n}")
    edges = torch.arange(m + 1, device=device) * n // m
    return torch.stack([edges[:-1], edges[1:] - 1], dim=-1)


def _owner(n: int, m: int, device) -> Tensor:
    """Which of m bins each of n slots belongs to."""
    b = bins(n, m, device)
    return torch.repeat_interleave(torch.arange(m, device=device), b[:, 1] - b[:, 0] + 1)


def bin_pool(x: Tensor, size: Tensor, th: int, tw: int) -> tuple[Tensor, Tensor]:
    """Size-weighted mean of ``x`` (B, H, W, C) over th x tw bins -> (B, th, tw, C), and the summed sizes."""
    b, h, w, c = x.shape
    rows, cols = _owner(h, th, x.device), _owner(w, tw, x.device)
    slot = (rows[:, None] * tw + cols[None, :]).flatten()  # (H*W,) bin of each cell
    weight = size.reshape(b, h * w, 1).to(x.dtype)
    total = x.new_zeros(b, th * tw, c).index_add_(1, slot, x.reshape(b, h * w, c) * weight)
    count = size.new_zeros(b, th * tw).index_add_(1, slot, size.reshape(b, h * w))
    pooled = total / count[..., None].to(x.dtype)
    return pooled.view(b, th, tw, c), count.view(b, th, tw)


def pool_spans(spans: Tensor, m: int) -> Tensor:
    """Coverage (B, n, 2) of the current rows (or columns) -> coverage (B, m, 2) of m pooled ones."""
    b = bins(spans.shape[1], m, spans.device)
    return torch.stack([spans[:, b[:, 0], 0], spans[:, b[:, 1], 1]], dim=-1)


def cell_groups(cells: Tensor, images: list[tuple[int, int]], groups: int) -> Tensor:
    """(B, n) which of about ``groups`` blocks each token falls in: ``cells`` (B, n) index into a sample's images laid
    one after another (their grids ``images``; -1 where there is no token, which gets -1 too). Each image gets a
    share of the blocks by its size, cut into a grid of its aspect (the bins of ``bins``); block ids run on across
    images."""
    if groups < 1:
        raise ValueError(f"need at least one block, got {groups}")
    total = sum(h * w for h, w in images)
    lookup, offset = [], 0
    for h, w in images:
        share = max(1, round(groups * h * w / total))
        gh = min(h, max(1, round((share * h / w) ** 0.5)))
        gw = min(w, max(1, share // gh))
        row, col = _owner(h, gh, cells.device), _owner(w, gw, cells.device)
        lookup.append((row[:, None] * gw + col[None, :]).flatten() + offset)
        offset += gh * gw
    table = torch.cat(lookup + [torch.full((1,), -1, device=cells.device)])
    return table[torch.where(cells >= 0, cells, total)]
