"""Orthogonal merging inside a vision encoder: at scheduled layers, between attention and MLP, fuse whole columns
or rows of the patch grid (class/register tokens untouched), so the grid leaving the encoder stays rectangular.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tokenfunnel.ops.merge import initial_spans, merge_columns, merge_rows, proportional_bias
from tokenfunnel.runtime.state import EncoderRun


def start_run(images: int, h: int, w: int, prefix: int, steps, proportional: bool, device) -> EncoderRun:
    return EncoderRun(
        prefix=prefix,
        size=torch.ones(images, h, w, device=device),
        rows=initial_spans(images, h, device),
        cols=initial_spans(images, w, device),
        steps=steps,
        proportional=proportional,
        patch_grid=(h, w),
    )


def merge_step(run: EncoderRun, x: Tensor, axis: str, r: int) -> Tensor:
    """Apply one OIM step to ``x`` (I, prefix + h*w, C) and update the run's sizes and spans."""
    h, w = run.grid
    head, grid = x[:, : run.prefix], x[:, run.prefix :].reshape(x.shape[0], h, w, x.shape[-1])
    if axis == "cols":
        grid, run.size, info = merge_columns(grid, run.size, r)
        run.cols = info.spans(run.cols)
    else:
        grid, run.size, info = merge_rows(grid, run.size, r)
        run.rows = info.spans(run.rows)
    return torch.cat([head, grid.flatten(1, 2)], dim=1)


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
        if step is not None:
            x = merge_step(run, x, *step)
        return mlp(layer, x)

    return forward
