"""Token merging inside a vision encoder, at scheduled layers; class/register tokens are never touched.

Steps (``EncoderRun.steps``: layer -> (kind, argument)):
- between attention and MLP: "cols"/"rows" (OIM: fuse whole adjacent columns/rows, the grid stays rectangular)
  and "tome" (ToMe's bipartite soft matching on the layer's keys; the tokens become a set);
- after the layer: "pool" (average the grid into th x tw bins), "zip" (VisionZip: dominant tokens by the
  attention the class token pays them, the rest merged into contextual tokens) and "spu" (LUVC's spectral score of
  the layer's output, attention-free: the highest-scoring tokens stay, the rest are dropped or merged into
  contextual tokens as VisionZip's are) and "score" (the same score and the keys, kept on the run for a later drop;
  the tokens pass unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor, nn

from tokenfunnel.adapters.vit import query_keys
from tokenfunnel.ops.merge import initial_spans, merge_columns, merge_rows, proportional_bias
from tokenfunnel.ops.pool import bin_pool, bins, pool_spans
from tokenfunnel.ops.select import gather_tokens, topk_in_order
from tokenfunnel.ops.setmerge import bipartite, dominant_contextual, merge_groups
from tokenfunnel.ops.spectrum import highfreq_score
from tokenfunnel.runtime.clock import ours
from tokenfunnel.runtime.state import EncoderRun

MID = ("cols", "rows", "tome")
AFTER = ("pool", "zip", "spu", "score")


def start_run(
    images: int, h: int, w: int, prefix: int, steps, proportional: bool, device, seen: tuple[int, int] | None = None
) -> EncoderRun:
    """A run over an h x w patch grid; ``seen`` is the smaller grid the encoder gets when the image is downsampled
    (each of its patches then covers a bin of the original ones)."""
    sh, sw = seen or (h, w)
    rows, cols = bins(h, sh, device), bins(w, sw, device)
    area = (rows[:, 1] - rows[:, 0] + 1)[:, None] * (cols[:, 1] - cols[:, 0] + 1)[None, :]
    return EncoderRun(
        prefix=prefix,
        size=area.float().expand(images, -1, -1).clone() if seen else torch.ones(images, h, w, device=device),
        rows=rows.expand(images, -1, -1).clone() if seen else initial_spans(images, h, device),
        cols=cols.expand(images, -1, -1).clone() if seen else initial_spans(images, w, device),
        steps=steps,
        proportional=proportional,
        patch_grid=(h, w),
    )


def final_grid(h: int, w: int, steps: dict[int, tuple[str, object]]) -> tuple[int, int]:
    """The grid the steps leave an h x w grid with ((1, n) once the tokens are a set)."""
    for _, (kind, arg) in sorted(steps.items()):
        if kind == "cols":
            w -= arg
        elif kind == "rows":
            h -= arg
        elif kind == "tome":
            h, w = 1, h * w - arg
        elif kind == "pool":
            h, w = arg
        elif kind == "spu":
            h, w = 1, arg[0] + arg[1]
        elif kind == "score":
            continue
        else:
            h, w = 1, sum(arg)
    return h, w


def _as_set(run: EncoderRun) -> None:
    """Give up the grid: every token takes the cell of its centre patch and the box of the patches it covers."""
    if run.cells is not None:
        return
    images, h, w = run.size.shape
    rows, cols = run.rows[:, :, None, :].expand(-1, -1, w, -1), run.cols[:, None, :, :].expand(-1, h, -1, -1)
    centre = (rows[..., 0] + rows[..., 1]) // 2 * run.patch_grid[1] + (cols[..., 0] + cols[..., 1]) // 2
    run.cells = centre.flatten(1)
    run.cover = torch.cat([rows, cols], dim=-1).flatten(1, 2)
    run.size = run.size.flatten(1)
    run.owner = _patch_owner(run.rows, run.cols, run.patch_grid)


def _patch_owner(rows: Tensor, cols: Tensor, grid: tuple[int, int]) -> Tensor:
    """(I, H*W) the cell of an (I, h, w) grid, in raster order, whose row and column spans hold each patch."""
    starts_r, starts_c = rows[..., 0].contiguous(), cols[..., 0].contiguous()
    r = torch.arange(grid[0], device=rows.device).expand(rows.shape[0], -1).contiguous()
    c = torch.arange(grid[1], device=cols.device).expand(cols.shape[0], -1).contiguous()
    row, col = torch.searchsorted(starts_r, r, right=True) - 1, torch.searchsorted(starts_c, c, right=True) - 1
    return (row[:, :, None] * cols.shape[1] + col[:, None, :]).flatten(1)


def _follow(owner: Tensor, moved: Tensor) -> Tensor:
    """Patch owners after a step that sent token j to ``moved[:, j]`` (-1: dropped)."""
    return torch.where(owner >= 0, moved.gather(1, owner.clamp(min=0)), -1)


def _grid_step(run: EncoderRun, x: Tensor, kind: str, arg) -> Tensor:
    h, w = run.grid
    head, grid = x[:, : run.prefix], x[:, run.prefix :].reshape(x.shape[0], h, w, x.shape[-1])
    if kind == "cols":
        grid, run.size, info = merge_columns(grid, run.size, arg)
        run.cols = info.spans(run.cols)
    elif kind == "rows":
        grid, run.size, info = merge_rows(grid, run.size, arg)
        run.rows = info.spans(run.rows)
    else:  # pool
        th, tw = arg
        grid, run.size = bin_pool(grid, run.size, th, tw)
        run.rows, run.cols = pool_spans(run.rows, th), pool_spans(run.cols, tw)
    return torch.cat([head, grid.flatten(1, 2)], dim=1)


def _keep_top(run: EncoderRun, x: Tensor, importance: Tensor, n: int) -> Tensor:
    """Keep the ``n`` patches of highest ``importance`` (I, patches) in their order and drop the rest."""
    p, top = run.prefix, topk_in_order(importance, n)
    run.size, run.cells, run.cover = run.size.gather(1, top), run.cells.gather(1, top), gather_tokens(run.cover, top)
    moved = top.new_full(importance.shape, -1)
    moved.scatter_(1, top, torch.arange(n, device=top.device).expand_as(top))
    run.owner = _follow(run.owner, moved)
    return torch.cat([x[:, :p], gather_tokens(x[:, p:], top)], dim=1)


def _set_step(run: EncoderRun, x: Tensor, kind: str, arg, layer: nn.Module, before: Tensor) -> Tensor:
    _as_set(run)
    p = run.prefix
    if kind == "spu":  # LUVC's SPU on the layer's output: attention-free, so only keys (to group the rest) are needed
        dominant, contextual, cutoff = arg
        importance = highfreq_score(x[:, p:].float(), cutoff)
        if contextual == 0:
            return _keep_top(run, x, importance, dominant)
        q, k = None, query_keys(layer, before, 0)[1]
    else:  # from the layer's own input; ToMe needs no queries, VisionZip only the class token's (or all, without one)
        q, k = query_keys(layer, before, 0 if kind == "tome" else (p or None))
    metric = k[:, :, p:].mean(dim=1)  # keys averaged over heads, as ToMe and VisionZip compare tokens
    if kind == "tome":
        assign, rep = bipartite(metric, arg)
    else:
        if kind == "zip":
            dominant, contextual = arg
            if p:  # attention the class token pays each patch, averaged over heads
                weights = (q[:, :, :1] @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)[:, :, 0, p:]
            else:  # no class token (SigLIP): the attention each patch receives, averaged over every query
                weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1).mean(dim=2)
            importance = weights.mean(dim=1)
        assign, rep = dominant_contextual(importance, metric, dominant, contextual)
    grid, run.size, run.cells, run.cover, moved = merge_groups(x[:, p:], run.size, run.cells, run.cover, assign, rep)
    run.owner = _follow(run.owner, moved)
    return torch.cat([x[:, :p], grid], dim=1)


def merge_step(run: EncoderRun, x: Tensor, kind: str, arg, layer: nn.Module | None = None, before=None) -> Tensor:
    """Apply one step to ``x`` (I, prefix + n, C) and update the run; ``before`` is the layer's input (for keys)."""
    if kind == "score":
        p = run.prefix

        @cache
        def scores() -> tuple[Tensor, Tensor]:
            with ours():
                return highfreq_score(x[:, p:].float(), arg), query_keys(layer, before, 0)[1][:, :, p:].mean(dim=1)

        run.patch_scores = scores
        return x
    if kind in ("cols", "rows", "pool"):
        if run.cells is not None:
            raise ValueError(f"a {kind!r} step needs a grid, but an earlier merge made the tokens a set")
        return _grid_step(run, x, kind, arg)
    return _set_step(run, x, kind, arg, layer, before)


def _bias(run: EncoderRun, dtype: torch.dtype) -> Tensor:
    """log(size) over keys as an additive mask (I, 1, 1, N): proportional attention for merged tokens."""
    grid = proportional_bias(run.size)
    head = grid.new_zeros(grid.shape[0], run.prefix)
    return torch.cat([head, grid], dim=1)[:, None, None, :].to(dtype)


def layer_forward(
    index: int, layer: nn.Module, halves: tuple[Callable, Callable], current: Callable[[], EncoderRun | None]
):
    """A forward for encoder layer ``index`` that merges when the active run schedules a step there."""
    attention, mlp = halves

    def forward(original, hidden_states, *args, **kwargs):
        run = current()
        if run is None:
            return original(hidden_states, *args, **kwargs)
        run.tokens.append(hidden_states.shape[1])
        step = run.steps.get(index)
        weighted = run.proportional and run.merged
        if step is None and not weighted:
            return original(hidden_states, *args, **kwargs)
        mask = kwargs.get("attention_mask", args[0] if args else None)
        if mask is not None:
            raise NotImplementedError("merging inside an encoder that receives an attention mask is not supported")
        x = attention(layer, hidden_states, _bias(run, hidden_states.dtype) if weighted else None)
        if step is not None and step[0] in MID:
            with ours():
                x = merge_step(run, x, *step, layer, hidden_states)
        x = mlp(layer, x)
        if step is not None and step[0] in AFTER:
            with ours():
                x = merge_step(run, x, *step, layer, hidden_states)
        return x

    return forward
