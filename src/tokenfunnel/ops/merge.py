"""Grid-preserving merges of whole columns / rows of a visual-token grid (ToMe-style, size-weighted).

Tokens live on their patch grid as ``x`` of shape (B, H, W, C) with ``size`` (B, H, W) counting the original
patches each token covers. Because a merge always fuses two adjacent whole columns (or rows), the grid stays
rectangular and each axis can be tracked on its own: ``spans`` (B, n, 2) holds the first and last original
column (or row) that each current column (or row) covers, inclusive.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AxisMerge:
    """One merge step along one grid axis: new slot k fuses old slots ``first[k]`` and ``last[k]`` (equal if kept).

    ``dim`` is the axis in the (B, H, W, *) layout: 2 for columns, 1 for rows. Apply the same merge to any other
    per-token tensor with :meth:`mean` (weighted average) or :meth:`add` (sum, e.g. for sizes).
    """

    first: Tensor  # (B, n_new) long, non-decreasing
    last: Tensor  # (B, n_new) long, last - first in {0, 1}
    dim: int

    def _take(self, t: Tensor, index: Tensor) -> Tensor:
        shape = [1] * t.dim()
        shape[0], shape[self.dim] = index.shape
        out_shape = list(t.shape)
        out_shape[self.dim] = index.shape[1]
        return t.gather(self.dim, index.view(shape).expand(out_shape))

    def add(self, t: Tensor) -> Tensor:
        """Sum the fused slots of ``t`` (B, H, W, *); kept slots are copied unchanged."""
        a, b = self._take(t, self.first), self._take(t, self.last)
        return torch.where(self._single(t), a, a + b)

    def mean(self, t: Tensor, weight: Tensor) -> Tensor:
        """Weighted average of the fused slots of ``t`` (B, H, W, *) with ``weight`` (B, H, W), e.g. the sizes."""
        w = weight.reshape(weight.shape + (1,) * (t.dim() - weight.dim())).to(t.dtype)
        a, b = self._take(t, self.first), self._take(t, self.last)
        wa, wb = self._take(w, self.first), self._take(w, self.last)
        # lerp with weight 0 returns `a` exactly, so kept tokens stay bit-identical (and zero weights give no 0/0)
        frac = torch.where(self._single(w), torch.zeros_like(wb), wb / (wa + wb))
        return torch.lerp(a, b, frac)

    def spans(self, spans: Tensor) -> Tensor:
        """Carry per-axis coverage (B, n_old, 2) [first, last] original index to the new slots (B, n_new, 2)."""
        start = spans[..., 0].gather(1, self.first)
        end = spans[..., 1].gather(1, self.last)
        return torch.stack([start, end], dim=-1)

    def _single(self, t: Tensor) -> Tensor:
        shape = [1] * t.dim()
        shape[0], shape[self.dim] = self.first.shape
        return (self.first == self.last).view(shape)


def initial_spans(batch: int, n: int, device: torch.device | str | None = None) -> Tensor:
    """Coverage of an unmerged axis: slot i covers original index i only, shape (batch, n, 2)."""
    idx = torch.arange(n, device=device)
    return torch.stack([idx, idx], dim=-1).expand(batch, n, 2).clone()


def column_similarity(x: Tensor, metric: Tensor | None = None) -> Tensor:
    """Cosine similarity of adjacent columns j, j+1 (B, W-1): per row on ``metric`` (default ``x``), mean over H."""
    m = x if metric is None else metric
    if m.dim() != 4:
        raise ValueError(f"expected a (B, H, W, C) token grid, got shape {tuple(m.shape)}; reshape tokens to the grid")
    m = F.normalize(m, dim=-1)  # the norm's eps keeps zero tokens at similarity 0 instead of NaN
    return (m[:, :, :-1] * m[:, :, 1:]).sum(-1).mean(1)


def _capacity(free: Tensor) -> Tensor:
    """How many disjoint adjacent pairs still fit in the free columns (B, W) -> (B,): floor(len/2) per free run."""
    cols = torch.arange(free.shape[1], device=free.device)
    last_blocked = torch.where(free, -1, cols).cummax(dim=1).values
    pos = cols - last_blocked - 1  # position inside the current free run
    return (free & (pos % 2 == 1)).sum(1)


def pick_pairs(similarity: Tensor, r: int) -> Tensor:
    """Choose exactly ``r`` disjoint adjacent pairs per sample, greedily by descending similarity -> (B, W-1) bool.

    Ties go to the lower pair index. A pair is skipped if it overlaps a chosen one or if taking it would leave too
    few free columns for the remaining pairs, so ``r <= W // 2`` always succeeds.
    """
    b, p = similarity.shape
    w = p + 1
    if r < 0 or r > w // 2:
        raise ValueError(f"cannot pick {r} disjoint adjacent pairs among {w} columns; use 0 <= r <= {w // 2}")
    chosen = torch.zeros(b, p, dtype=torch.bool, device=similarity.device)
    if r == 0:
        return chosen
    order = similarity.argsort(dim=1, descending=True, stable=True)
    free = torch.ones(b, w, dtype=torch.bool, device=similarity.device)
    need = torch.full((b,), r, device=similarity.device)
    rows = torch.arange(b, device=similarity.device)
    for t in range(p):
        j = order[:, t]
        ok = (need > 0) & free[rows, j] & free[rows, j + 1]
        trial = free.clone()
        trial[rows, j] = False
        trial[rows, j + 1] = False
        ok &= _capacity(trial) >= need - 1
        free = torch.where(ok[:, None], trial, free)
        chosen[rows, j] |= ok
        need = need - ok.long()
    if bool((need > 0).any()):  # cannot happen: the capacity guard keeps a feasible completion at every step
        raise RuntimeError("pick_pairs ran out of pairs; this is a bug")
    return chosen


def merge_columns(x: Tensor, size: Tensor, r: int, metric: Tensor | None = None) -> tuple[Tensor, Tensor, AxisMerge]:
    """Fuse the ``r`` most similar disjoint adjacent column pairs by size-weighted average.

    Returns (B, H, W-r, C) tokens, (B, H, W-r) sizes and the :class:`AxisMerge` to replay the merge elsewhere.
    """
    if x.dim() != 4 or size.shape != x.shape[:3]:
        raise ValueError(
            f"expected x (B, H, W, C) and size (B, H, W), got {tuple(x.shape)} and {tuple(size.shape)}; "
            "lay tokens on their grid"
        )
    w = x.shape[2]
    # r >= w would empty the grid, w < 2 has no pair at all, and pairs must be disjoint: all need r <= w // 2
    if r < 0 or r > w // 2:
        raise ValueError(f"cannot merge {r} disjoint column pairs in a grid {w} wide; use 0 <= r <= {w // 2}")
    pairs = pick_pairs(column_similarity(x, metric), r)
    # an old column is absorbed into its left neighbour iff the pair ending at it was chosen
    absorbed = F.pad(pairs, (1, 0))
    keep = ~absorbed
    first = torch.arange(w, device=x.device).expand(x.shape[0], w)[keep].view(x.shape[0], w - r)
    last = first + F.pad(pairs, (0, 1)).gather(1, first).long()
    info = AxisMerge(first=first, last=last, dim=2)
    return info.mean(x, size), info.add(size), info


def merge_rows(x: Tensor, size: Tensor, r: int, metric: Tensor | None = None) -> tuple[Tensor, Tensor, AxisMerge]:
    """Same as :func:`merge_columns` along H: fuses adjacent whole rows, output (B, H-r, W, C)."""
    xt, st, info = merge_columns(
        x.transpose(1, 2), size.transpose(1, 2), r, None if metric is None else metric.transpose(1, 2)
    )
    return xt.transpose(1, 2), st.transpose(1, 2), dataclasses.replace(info, dim=1)


def grid_schedule(h: int, w: int, target_h: int, target_w: int, steps: int) -> list[tuple[str, int]]:
    """Alternating ("cols", r) / ("rows", r) steps, columns first, taking an h x w grid to target_h x target_w.

    Each axis spreads its reduction as evenly as it can while never merging more than half the current
    columns/rows in one step (so disjoint pairs exist); early steps take the larger share when it must be uneven.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}; pass a non-negative number of merge steps")
    for name, n, target in (("height", h, target_h), ("width", w, target_w)):
        if not 1 <= target <= n:
            raise ValueError(f"target {name} {target} is outside 1..{n}; pick a target between 1 and the grid {name}")
    n_cols, n_rows = (steps + 1) // 2, steps // 2
    plans = {"cols": _axis_plan(w, target_w, n_cols, "width"), "rows": _axis_plan(h, target_h, n_rows, "height")}
    schedule = []
    for i in range(steps):
        axis = "cols" if i % 2 == 0 else "rows"
        schedule.append((axis, plans[axis][i // 2]))
    return schedule


def _axis_plan(n: int, target: int, k: int, name: str) -> list[int]:
    # k halvings can shrink n to at best ceil(n / 2**k)
    if -(-n // 2**k) > target:
        raise ValueError(
            f"cannot shrink {name} {n} to {target} in {k} merge steps on that axis (each step at most halves it); "
            "use more steps or a larger target"
        )
    plan = []
    for left in range(k, 0, -1):
        even = -(-(n - target) // left)
        at_least = n - target * 2 ** (left - 1)  # so the remaining left-1 steps can still reach the target
        r = min(max(even, at_least), n // 2)
        plan.append(r)
        n -= r
    return plan


def proportional_bias(size: Tensor) -> Tensor:
    """log(size) flattened to (B, N): added to attention logits so a merged token counts as the patches it covers."""
    return size.flatten(1).log()
