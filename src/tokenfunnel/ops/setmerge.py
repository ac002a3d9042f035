"""Merges that give up the grid: each output token is a group of input tokens, represented by one of them.

A merge is an assignment (B, N) of every input token to an output slot plus, per slot, the input token that
represents it (its position in the prompt). ``merge_groups`` applies any such assignment to the features
(size-weighted mean), the sizes (sum), the patch cells (the representative's) and the covered boxes (union); the
slots come back in the raster order of their cells so placeholders can be filled in order.
ToMe's bipartite soft matching and VisionZip's dominant + contextual split are assignments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def merge_groups(
    x: Tensor, size: Tensor, cells: Tensor, cover: Tensor, assign: Tensor, rep: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Apply an assignment: x (B, N, C), size (B, N), cells (B, N), cover (B, N, 4) [r0, r1, c0, c1];
    assign (B, N) slot of each token; rep (B, M) input token representing each slot. Returns the slots sorted by
    cell: x (B, M, C), size, cells, cover, and (B, N) the output token each input token went into."""
    b, n, c = x.shape
    m = rep.shape[1]
    weight = size.to(x.dtype)[..., None]
    total = x.new_zeros(b, m, c).scatter_add_(1, assign[..., None].expand(-1, -1, c), x * weight)
    sizes = size.new_zeros(b, m).scatter_add_(1, assign, size)
    merged = total / sizes[..., None].to(x.dtype)
    idx = assign[..., None].expand(-1, -1, 2)
    low = cover.new_full((b, m, 2), torch.iinfo(cover.dtype).max).scatter_reduce(1, idx, cover[..., ::2], "amin")
    high = cover.new_full((b, m, 2), -1).scatter_reduce(1, idx, cover[..., 1::2], "amax")
    boxes = torch.stack([low[..., 0], high[..., 0], low[..., 1], high[..., 1]], dim=-1)
    slot_cells = cells.gather(1, rep)
    order = slot_cells.argsort(dim=1)
    take = order[..., None]
    return (
        merged.gather(1, take.expand(-1, -1, c)),
        sizes.gather(1, order),
        slot_cells.gather(1, order),
        boxes.gather(1, take.expand(-1, -1, 4)),
        order.argsort(dim=1).gather(1, assign),
    )


def bipartite(metric: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """ToMe's bipartite soft matching: even tokens (A) against odd tokens (B); the r A tokens most alike their best
    B match merge into it. ``metric`` (B, N, D). Returns (assign (B, N), rep (B, N - r))."""
    b, n, _ = metric.shape
    if not 0 <= r <= n // 2:
        raise ValueError(f"bipartite matching merges at most {n // 2} of {n} tokens per step, asked for {r}")
    m = F.normalize(metric.float(), dim=-1)
    a_idx, b_idx = torch.arange(0, n, 2, device=metric.device), torch.arange(1, n, 2, device=metric.device)
    best, match = (m[:, a_idx] @ m[:, b_idx].transpose(1, 2)).max(dim=-1)  # (B, |A|)
    order = best.argsort(dim=1, descending=True, stable=True)
    merged_a, kept_a = order[:, :r], order[:, r:]
    # slots: the kept A tokens first, then every B token
    slot_of_a = torch.empty_like(order)
    slot_of_a.scatter_(1, kept_a, torch.arange(kept_a.shape[1], device=metric.device).expand(b, -1))
    slot_of_a.scatter_(1, merged_a, kept_a.shape[1] + match.gather(1, merged_a))
    slot_of_b = kept_a.shape[1] + torch.arange(len(b_idx), device=metric.device).expand(b, -1)
    assign = torch.empty(b, n, dtype=torch.long, device=metric.device)
    assign[:, a_idx], assign[:, b_idx] = slot_of_a, slot_of_b
    rep = torch.cat([a_idx[kept_a], b_idx.expand(b, -1)], dim=1)
    return assign, rep


def dominant_contextual(importance: Tensor, metric: Tensor, dominant: int, contextual: int) -> tuple[Tensor, Tensor]:
    """VisionZip's split: the ``dominant`` most important tokens stay; the rest are grouped onto ``contextual``
    targets chosen evenly among them, each joining the target it is most alike. Returns (assign, rep)."""
    b, n, _ = metric.shape
    if dominant < 0 or contextual < 0 or dominant + contextual > n or (contextual == 0 and dominant < n):
        raise ValueError(
            f"cannot keep {dominant} dominant + {contextual} contextual tokens out of {n} "
            "(the tokens left over need at least one contextual token)"
        )
    ranked = importance.argsort(dim=1, descending=True, stable=True)
    top, rest = ranked[:, :dominant].sort(dim=1).values, ranked[:, dominant:].sort(dim=1).values
    assign = torch.empty(b, n, dtype=torch.long, device=metric.device)
    assign.scatter_(1, top, torch.arange(dominant, device=metric.device).expand(b, -1))
    if contextual == 0:
        return assign, top
    step = rest.shape[1] / contextual
    pick = torch.tensor([math.floor(i * step) for i in range(contextual)], device=metric.device)
    targets = rest[:, pick]  # (B, contextual)
    m = F.normalize(metric.float(), dim=-1)
    d = m.shape[-1]
    rest_m, target_m = m.gather(1, rest[..., None].expand(-1, -1, d)), m.gather(1, targets[..., None].expand(-1, -1, d))
    nearest = (rest_m @ target_m.transpose(1, 2)).argmax(dim=-1)  # (B, |rest|)
    nearest.scatter_(1, pick.expand(b, -1), torch.arange(contextual, device=metric.device).expand(b, -1))
    assign.scatter_(1, rest, dominant + nearest)
    return assign, torch.cat([top, targets], dim=1)


def group_mean(x: Tensor, size: Tensor, assign: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Size-weighted mean of ``x`` (N, C) over the ``m`` groups of ``assign`` (N,) -> (m, C), and the summed sizes.
    A group of one token is that token exactly."""
    weight = size.to(x.dtype)[:, None]
    total = x.new_zeros(m, x.shape[1]).index_add_(0, assign, x * weight)
    sizes = size.new_zeros(m).index_add_(0, assign, size)
    if bool((sizes == 0).any()):
        raise ValueError("every group needs at least one token; an empty group has no mean")
    return total / sizes[:, None].to(x.dtype), sizes


def fold_rest(x: Tensor, size: Tensor, importance: Tensor, metric: Tensor, count: int, contextual: int):
    """Keep ``count`` of the tokens x (B, N, C): the ``count - contextual`` most important as they are, the rest
    averaged (size-weighted) onto ``contextual`` of them as VisionZip groups them (``dominant_contextual``).

    Returns (idx (B, count) ascending: the input token whose place each output takes, x (B, count, C), size).
    Nothing is folded when ``count`` is N.
    """
    b, n, c = x.shape
    if count == n:
        return torch.arange(n, device=x.device).expand(b, -1), x, size
    assign, rep = dominant_contextual(importance, metric, count - contextual, contextual)
    weight = size.to(torch.float32)[..., None]
    total = x.new_zeros(b, count, c, dtype=torch.float32).scatter_add_(
        1, assign[..., None].expand(-1, -1, c), x.float() * weight
    )
    sizes = size.new_zeros(b, count).scatter_add_(1, assign, size)
    members = torch.zeros(b, count, dtype=torch.long, device=x.device).scatter_add_(1, assign, torch.ones_like(assign))
    alone = x.gather(1, rep[..., None].expand(-1, -1, c))  # a slot of one token is that token, bit for bit
    merged = torch.where(members[..., None] == 1, alone, (total / sizes[..., None].to(torch.float32)).to(x.dtype))
    order = rep.argsort(dim=1)
    return rep.gather(1, order), merged.gather(1, order[..., None].expand(-1, -1, c)), sizes.gather(1, order)
