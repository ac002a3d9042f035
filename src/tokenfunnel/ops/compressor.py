"""A learned visual-token compressor (pure torch, no model knowledge): an importance MLP scores every token and the
top k stay; every dropped token is folded into the kept token it is most alike (cosine), with a weight a gate MLP
gives the pair.

Each kept token becomes a softmax-weighted combination of itself and the tokens folded into it. The logits carry the
importance scores (the kept token's own score plus a learned bias; a dropped token's score plus the gate's output),
which is how the importance MLP learns at all: top-k has no gradient, but a dropped token whose content the loss
wants pulls its group's weights (so its score) up, and a kept token the loss can spare is pulled down. A group of one
token gets weight exactly 1, so a token nothing was folded into passes bit for bit (and k = all tokens is the input
itself). With the gate's last layer at zero the merge starts as a score-weighted mean of each group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenfunnel.ops.detail import ahead


def _norm(x: Tensor) -> Tensor:
    # scale-free inputs: DINOv2's background tokens leave the projector with ~1.8x the norm of object tokens
    return F.layer_norm(x, x.shape[-1:])


class Compressor(nn.Module):
    """``forward(x, k)``: x (B, F, n, D), the projected tokens of F images per sample; keeps k of the F * n."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        # token and its deviation from its image's mean: what stands out from the background is visible per token
        self.importance = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.gate = nn.Sequential(nn.Linear(3 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.own = nn.Parameter(torch.zeros(()))  # a kept token's logit in its own group, beside its score
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)

    def scores(self, x: Tensor) -> Tensor:
        """(B, F * n) importance of each token of x (B, F, n, D)."""
        context = x - x.mean(dim=2, keepdim=True)
        return self.importance(torch.cat([_norm(x), _norm(context)], dim=-1)).squeeze(-1).flatten(1)

    def forward(self, x: Tensor, k: int, first: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(merged (B, k, D), cells (B, k) increasing indices into the F * n tokens, sizes (B, k) tokens in each).

        ``first`` (B, F * n) bool: tokens kept before any other (most important first among them). A dropped token
        then folds only into a kept token on its own side (first or not), and is left out when none was kept there:
        folding the rest of a picture into the part a question names blurs it (README). The merge weights still come
        from the importance scores alone."""
        b, f, n, d = x.shape
        total = f * n
        if not 1 <= k <= total:
            raise ValueError(f"the compressor keeps between 1 and {total} tokens, asked for {k}")
        flat = x.reshape(b, total, d)
        if k == total:  # nothing to fold: the input exactly
            cells = torch.arange(total, device=x.device).expand(b, -1)
            return flat, cells, torch.ones(b, total, dtype=torch.long, device=x.device)
        score = self.scores(x)
        rank = score if first is None else ahead(score.detach(), first)
        cells = rank.topk(k, dim=1).indices.sort(dim=1).values
        kept = torch.zeros(b, total, dtype=torch.bool, device=x.device).scatter_(1, cells, True)
        dropped = (~kept).nonzero()[:, 1].view(b, total - k)
        keep_x, drop_x = _take(flat, cells), _take(flat, dropped)
        unit = F.normalize(flat.detach(), dim=-1)  # which kept token a dropped one joins is a choice, not learned
        sim = _take(unit, dropped) @ _take(unit, cells).transpose(1, 2)  # (B, total - k, k)
        target = sim.argmax(dim=-1)
        if first is not None:
            side = first.gather(1, dropped)[..., None] == first.gather(1, cells)[:, None, :]
            target = sim.masked_fill(~side, float("-inf")).argmax(dim=-1)
            target = target.masked_fill(~side.any(dim=-1), k)  # slot k: nothing on its side was kept, left out
        assign = torch.empty(b, total, dtype=torch.long, device=x.device)
        assign.scatter_(1, cells, torch.arange(k, device=x.device).expand(b, -1))
        assign.scatter_(1, dropped, target)
        host = _norm(_take(keep_x, target.clamp(max=k - 1)))
        guest = _norm(drop_x)
        gate = self.gate(torch.cat([host, guest, host - guest], dim=-1)).squeeze(-1)
        logit = score.scatter_add(1, dropped, gate).scatter_add(1, cells, self.own.expand(b, k))
        weight = group_softmax(logit, assign, k + 1)
        merged = flat.new_zeros(b, k + 1, d).scatter_add(
            1, assign[..., None].expand(-1, -1, d), weight[..., None] * flat
        )
        sizes = torch.zeros(b, k + 1, dtype=torch.long, device=x.device).scatter_add_(
            1, assign, torch.ones_like(assign)
        )
        return merged[:, :k], cells, sizes[:, :k]


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, N, D) at idx (B, M) -> (B, M, D)."""
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))


def group_softmax(logit: Tensor, group: Tensor, groups: int) -> Tensor:
    """Softmax of ``logit`` (B, N) within each of the ``groups`` groups of ``group`` (B, N): a lone member gets 1."""
    top = logit.new_full((logit.shape[0], groups), float("-inf")).scatter_reduce(1, group, logit, "amax")
    e = (logit - top.gather(1, group)).exp()
    return e / e.new_zeros(top.shape).scatter_add(1, group, e).gather(1, group)
