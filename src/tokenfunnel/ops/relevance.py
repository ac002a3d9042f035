"""Query relevance of image regions, and a level-of-detail split of a token budget by it.

Regions are blocks of cells of a patch grid. Each region is ranked by how alike its mean token is to the question's
tokens; tiers of the ranking get different numbers of tokens per region, and inside a region the most relevant
cells become the kept tokens, the others merged into the one they are most alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCE = ("max", "mean")


def regions(h: int, w: int, block: tuple[int, int]) -> Tensor:
    """(h*w,) the region of each cell of an h x w grid cut into blocks of ``block`` (rows, cols) cells, raster
    order; blocks at the right and bottom edges are smaller when the block does not divide the grid."""
    bh, bw = block
    if not (1 <= bh <= h and 1 <= bw <= w):
        raise ValueError(f"a region of {bh}x{bw} cells does not fit a {h}x{w} grid; use a smaller region")
    rows = torch.arange(h)[:, None] // bh
    cols = torch.arange(w)[None, :] // bw
    return (rows * math.ceil(w / bw) + cols).flatten()


def relevance(tokens: Tensor, question: Tensor, reduce: str = "max") -> Tensor:
    """(N,) cosine of each of ``tokens`` (N, D) with the ``question`` tokens (q, D), reduced over the question."""
    if reduce not in REDUCE:
        raise ValueError(f"reduce must be one of {REDUCE}, got {reduce!r}")
    if question.shape[0] == 0:
        raise ValueError("the question has no tokens; relevance needs at least one")
    sim = F.normalize(tokens.float(), dim=-1) @ F.normalize(question.float(), dim=-1).T
    return sim.amax(dim=1) if reduce == "max" else sim.mean(dim=1)


def region_means(x: Tensor, region: Tensor, count: int) -> Tensor:
    """(count, D) mean token of each region; ``region`` (N,) in 0..count-1."""
    total = x.float().new_zeros(count, x.shape[1]).index_add_(0, region, x.float())
    return total / torch.bincount(region, minlength=count).clamp(min=1)[:, None]


def check_tiers(tiers: Sequence[tuple[int, int]]) -> None:
    """Tiers are (regions, tokens per region) pairs, most relevant first: regions >= 1, tokens >= 1 and falling."""
    try:
        pairs = [(int(r), int(t)) for r, t in tiers]
    except (TypeError, ValueError):
        raise ValueError(f"tiers are (regions, tokens per region) pairs, got {tiers!r}") from None
    if not pairs or any(r < 1 or t < 1 for r, t in pairs):
        raise ValueError(f"every tier needs >= 1 region and >= 1 token per region, got {pairs}")
    tokens = [t for _, t in pairs]
    if any(a <= b for a, b in pairwise(tokens)):
        raise ValueError(
            f"tier budgets must increase with relevance (tokens per region falling from the first tier), got {tokens}"
        )


def tier_sizes(count: int, shares: Sequence[int]) -> list[int]:
    """Split ``count`` regions among tiers in proportion to ``shares`` (largest remainder, earlier tiers first)."""
    total = sum(shares)
    exact = [count * s / total for s in shares]
    sizes = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: count - sum(sizes)]:
        sizes[i] += 1
    return sizes


def allot(score: Tensor, capacity: Tensor, tiers: Sequence[tuple[int, int]], total: int | None = None) -> Tensor:
    """(R,) tokens each region keeps: regions ranked by ``score`` (R,) fill the ``tiers`` (their region counts
    scaled to R), each region at most its ``capacity`` (R,) cells.

    With ``total``, the tiers' tokens per region are scaled by one factor so the regions keep exactly ``total``
    tokens (at least one each); what rounding leaves over goes one token at a time to the most relevant regions
    with room.
    """
    count = score.shape[0]
    check_tiers(tiers)
    order = score.argsort(descending=True, stable=True)
    sizes = tier_sizes(count, [r for r, _ in tiers])
    per_rank = torch.repeat_interleave(torch.tensor([t for _, t in tiers]), torch.tensor(sizes))
    base = torch.empty(count, dtype=torch.long)
    base[order] = per_rank
    cap = capacity.long().cpu()
    if total is None:
        return torch.minimum(base, cap)
    if not count <= total <= int(cap.sum()):
        raise ValueError(
            f"{total} tokens cannot be split over {count} regions of {int(cap.sum())} cells (one token per region at "
            "least, every cell at most); ask for a budget in that range"
        )

    def fill(alpha: float) -> Tensor:
        return torch.minimum(torch.clamp((alpha * base).floor().long(), min=1), cap)

    lo, hi = 0.0, float(cap.max())
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if int(fill(mid).sum()) <= total else (lo, mid)
    take = fill(lo)
    missing = total - int(take.sum())
    while missing > 0:  # each pass gives one more token to every region with room, most relevant first
        for r in order.tolist():
            if missing and take[r] < cap[r]:
                take[r] += 1
                missing -= 1
    return take


def group_by_relevance(region: Tensor, score: Tensor, metric: Tensor, take: Tensor) -> tuple[Tensor, Tensor]:
    """Inside each region, its ``take`` most relevant cells (by ``score`` (N,)) are kept and every other cell joins
    the kept cell of its region it is most alike (cosine of ``metric`` (N, D)). ``region`` (N,), ``take`` (R,).

    Returns (assign (N,) group of each cell, rep (k,) the kept cell of each group, increasing).
    """
    n = region.shape[0]
    device = metric.device
    region, score, take = region.to(device), score.to(device), take.to(device)
    by_score = score.argsort(descending=True, stable=True)
    order = by_score[region[by_score].argsort(stable=True)]  # by region, most relevant first inside each
    start = torch.searchsorted(region[order], region[order])  # first slot of each cell's region in ``order``
    rank = torch.empty(n, dtype=torch.long, device=device)
    rank[order] = torch.arange(n, device=device) - start
    kept = rank < take[region]
    rep = kept.nonzero()[:, 0]  # increasing
    m = F.normalize(metric.float(), dim=-1)
    sim = (m @ m[rep].T).masked_fill(region[:, None] != region[rep][None, :], float("-inf"))
    assign = sim.argmax(dim=1)
    assign[rep] = torch.arange(len(rep), device=device)
    return assign, rep
