"""Keep the top-k tokens per sample while preserving their original order."""

from __future__ import annotations

import torch
from torch import Tensor


def first_then(scores: Tensor, first: Tensor) -> Tensor:
    """Scores (B, n) that rank every ``first`` token of a row before the others, each group in ``scores``' order: minus
    the rank, so that the order does not hang on the size of any offset (a row in a batch ranks as it does alone)."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    order = order.gather(1, (~first).gather(1, order).to(torch.uint8).argsort(dim=1, stable=True))
    return -order.argsort(dim=1).to(scores.dtype)


def topk_in_order(scores: Tensor, k: int) -> Tensor:
    """Indices (B, k) of the k highest ``scores`` (B, N) per sample, sorted ascending; ties go to the lower index."""
    if scores.dim() != 2:
        raise ValueError(f"expected scores of shape (B, N), got {tuple(scores.shape)}; flatten them per sample")
    n = scores.shape[1]
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} tokens; use 0 <= k <= {n}")
    # a stable descending sort makes ties deterministic (lower index first), which torch.topk does not promise
    best = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return best.sort(dim=1).values


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Pick tokens ``idx`` (B, k) from ``x`` (B, N, *) per sample -> (B, k, *)."""
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[rows, idx]


def keep_mask(idx: Tensor, n: int) -> Tensor:
    """Boolean mask (B, n) that is True exactly at the kept indices ``idx`` (B, k)."""
    return torch.zeros(idx.shape[0], n, dtype=torch.bool, device=idx.device).scatter(1, idx, True)


def best_per_group(scores: Tensor, group: Tensor) -> Tensor:
    """Boolean mask (B, N), True at the highest of ``scores`` (B, N) within each group ``group`` (B, N) of a sample
    (ties to the lower index); a negative group marks a slot that belongs to none (never True)."""
    if scores.shape != group.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and groups {tuple(group.shape)} must both be (B, N)")
    b, n = scores.shape
    order = scores.argsort(dim=1, descending=True, stable=True)
    grouped = order.gather(1, group.gather(1, order).argsort(dim=1, stable=True))  # by group, best first in each
    g = group.gather(1, grouped)
    first = torch.ones_like(g, dtype=torch.bool)
    first[:, 1:] = g[:, 1:] != g[:, :-1]
    return torch.zeros(b, n, dtype=torch.bool, device=scores.device).scatter(1, grouped, first & (g >= 0))
