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
