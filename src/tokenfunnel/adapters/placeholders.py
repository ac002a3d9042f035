"""Placeholder runs of the families that show their LLM one token per (block of) grid cell(s): LLaVA (s = 1),
Idefics3/SmolVLM and InternVL (pixel shuffle by s). After OIM each image's run is shrunk to the tokens the encoder
kept: each token takes the placeholder, and so the position, of the block that holds its centre patch; text keeps
the positions of the unmerged prompt.

Plans with a stage between the projector and the language model shrink the runs themselves: ``temporal`` (pvc, LLaVA
family) folds the frames of a video, ``select`` (lod, difficulty, learned, detail; every family here) turns each
sample's tokens, after any pixel shuffle, and its question into a smaller set, each token at the placeholder of one of
its cells; a plan may also read a coarser view of each image (detail's global view), encoded by the runtime in one
extra tower call.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from tokenfunnel.adapters import frames
from tokenfunnel.adapters.question import question_span, special_ids
from tokenfunnel.ops.positions import prompt_positions
from tokenfunnel.runtime.clock import ours
from tokenfunnel.runtime.state import RUN, Layout, Selection, Visuals


def run_of(encoded):
    """The EncoderRun that produced these image features, or a clear error if they were encoded uncompressed."""
    run = getattr(encoded, RUN, None)
    if run is None:
        raise ValueError("these image features were computed without compression; encode them on the compressed model")
    return run


def _blocks(spans: Tensor, s: int) -> Tensor:
    """Coverage (I, n, 2) of the merged grid's rows (or columns) -> coverage (I, n/s, 2) of the shuffled ones."""
    return torch.stack([spans[:, ::s, 0], spans[:, s - 1 :: s, 1]], dim=-1)


def boxes(rows: Tensor, cols: Tensor, s: int):
    """Per image, (h'*w', 4) [row0, row1, col0, col1] of the original patches each language-model token covers."""
    rows, cols = _blocks(rows, s), _blocks(cols, s)
    hh, ww = rows.shape[1], cols.shape[1]
    for r, c in zip(rows, cols, strict=True):
        yield torch.cat([r[:, None, :].expand(hh, ww, 2), c[None, :, :].expand(hh, ww, 2)], dim=-1).flatten(0, 1)


def centres(rows: Tensor, cols: Tensor, s: int, w: int) -> Tensor:
    """Placeholder (of the unmerged run, raster over (h/s) x (w/s)) whose block holds each token's centre patch.

    Each shuffled row covers at least s original rows, so consecutive centres lie at least s apart and fall into
    different blocks: no two tokens take the same placeholder.
    """
    rows, cols = _blocks(rows, s), _blocks(cols, s)
    r = (rows[..., 0] + rows[..., 1]) // 2 // s
    c = (cols[..., 0] + cols[..., 1]) // 2 // s
    return (r[:, :, None] * (w // s) + c[:, None, :]).flatten(1)


def images_per_sample(rt, run, input_ids: Tensor, per_image: int) -> int:
    """How many images (tiles, frames) each sample's prompt holds; a clear error unless every sample holds the same
    whole number of placeholder runs and the encoder saw exactly that many images."""
    placeholders = (input_ids == rt.adapter.image_token_id).sum(1)
    per_sample = int(placeholders[0])
    if per_sample == 0:
        name = rt.adapter.placeholder
        raise ValueError(f"the prompt holds no {name} placeholder; build inputs with the model's processor")
    uneven = bool((placeholders != per_sample).any()) or per_sample % per_image
    if uneven or per_sample // per_image * input_ids.shape[0] != len(run.size):
        raise ValueError(
            f"each sample must hold the same number of images (tiles) of {per_image} placeholders "
            f"(got {placeholders.tolist()} for {len(run.size)} images); batch prompts with equal image counts"
        )
    return per_sample // per_image


def shrink(rt, run, input_ids: Tensor, attention_mask, position_ids):
    """Record the layout of this prompt and shrink each image's placeholder run to the tokens the encoder kept.

    The runtime's adapter names the shuffle factor (``scale``), the placeholder (``image_token_id``, shown to users
    as ``placeholder``) and the language model (``text_model``).

    Returns None when nothing is compressed (call the model unchanged), else the shortened ``input_ids``,
    ``attention_mask`` and ``position_ids`` (text keeps the positions of the unmerged prompt, each visual token
    the position of the placeholder its centre patch had) with ``rt.pending`` set for the language model.
    """
    s, token, layers = rt.adapter.scale, rt.adapter.image_token_id, rt.adapter.text_model.config.num_hidden_layers
    b = input_ids.shape[0]
    h, w = run.patch_grid
    per_image = (h // s) * (w // s)
    images = images_per_sample(rt, run, input_ids, per_image)
    per_sample = images * per_image
    hh, ww = run.grid
    counts = rt.plan.llm_counts(images * (hh // s) * (ww // s), per_sample, layers)
    rt.record.encoder_tokens = list(run.tokens)
    rt.record.encoder_original = [run.prefix + h * w] * len(run.tokens)
    layout = Layout(
        visual=input_ids == token,
        images=[(hh // s, ww // s)] * images,
        original=per_sample,
        boxes=list(boxes(run.rows, run.cols, s)) if run.cells is None else list(run.cover),
        patch_grid=(h, w),
        owners=None if run.cells is None else list(run.owner),
    )
    rt.record.layout = layout
    if (hh, ww) == (h, w) and all(c == per_sample for c in counts):  # nothing to compress: the model as it is
        rt.record.llm_visual_tokens = list(counts)
        rt.record.kept_cells = [torch.arange(per_sample).expand(b, -1)] * len(counts)
        return None
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    positions = (position_ids if position_ids is not None else prompt_positions(mask)).expand(b, -1)
    at = (input_ids == token).nonzero()[:, 1].view(b, images, per_image)
    centre = (centres(run.rows, run.cols, s, w) if run.cells is None else run.cells).view(b, images, -1)
    keep = input_ids != token
    keep[torch.arange(b, device=keep.device)[:, None], at.gather(2, centre).flatten(1)] = True
    idx = keep.nonzero()[:, 1].view(b, -1)
    ids, mask, positions = input_ids.gather(1, idx), mask.gather(1, idx), positions.gather(1, idx)
    layout.visual = ids == token
    rt.pending = layout  # the caller clears it once the model call returns or fails
    return ids, mask, positions


def shrink_frames(rt, run, input_ids: Tensor, attention_mask, position_ids, encoded):
    """Like ``shrink`` for a plan with a temporal stage: each sample's images are the frames of one video, folded
    and thinned by ``rt.plan.temporal`` (see ``adapters.frames``). Also returns the features that stay."""
    token = rt.adapter.image_token_id
    if rt.adapter.scale != 1:
        raise ValueError(f"temporal stages need one language-model token per patch, not {rt.adapter.family}'s")
    b = input_ids.shape[0]
    h, w = run.patch_grid
    count = images_per_sample(rt, run, input_ids, h * w)
    hh, ww = run.grid
    if run.cells is not None:
        raise ValueError("temporal stages need each frame's tokens on a grid, but the encoder made them a set")
    feats = torch.cat(list(encoded.pooler_output)).view(b, count, hh * ww, -1)
    visual = input_ids == token
    at = visual.nonzero()[:, 1].view(b, count, h * w)
    slots = at.gather(2, centres(run.rows, run.cols, 1, w).view(b, count, -1))
    new = frames.rebuild(rt.plan.temporal, feats, slots, visual)
    rt.record.encoder_tokens = list(run.tokens)
    rt.record.encoder_original = [run.prefix + h * w] * len(run.tokens)
    layout = frames.record(rt, new, input_ids, token, list(boxes(run.rows, run.cols, 1)), (hh, ww), (h, w))
    if layout is None:
        return None
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    positions = (position_ids if position_ids is not None else prompt_positions(mask)).expand(b, -1)
    mask = mask.gather(1, new.index).masked_fill(new.pad, 0)
    rt.pending = layout
    return input_ids.gather(1, new.index), mask, positions.gather(1, new.index), with_features(encoded, new.features)


def shrink_set(rt, run, input_ids: Tensor, attention_mask, position_ids, encoded):
    """Like ``shrink`` for a plan with a select stage: per sample, ``rt.plan.select`` turns the projected tokens of
    its images and its question into a smaller set of tokens, each at the placeholder of one input cell; samples
    keeping different counts are padded as in ``adapters.frames``. Also returns the features that stay."""
    token, name, s = rt.adapter.image_token_id, getattr(rt.plan, "name", "this method"), rt.adapter.scale
    if run.cells is not None or run.grid != run.patch_grid:
        raise ValueError(f"{name} needs each image's whole patch grid after the projector, but the encoder merged it")
    b = input_ids.shape[0]
    h, w = run.patch_grid[0] // s, run.patch_grid[1] // s  # the language model's grid (after any pixel shuffle)
    count = images_per_sample(rt, run, input_ids, h * w)
    per_sample = count * h * w
    feats = torch.cat(list(encoded.pooler_output)).view(b, count, h * w, -1)
    visual = input_ids == token
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    at = visual.nonzero()[:, 1].view(b, per_sample)  # the placeholder of input cell f * h * w + j
    text = rt.adapter.text_model
    layers = text.config.num_hidden_layers
    ends, skip = special_ids(text.config)
    grid, views, extra = coarse_views(rt, run, h, w)
    thumbnail = count > 1 and getattr(rt.adapter, "thumbnail_last", False)  # tiles, then the whole picture
    picks, chosen = [], []
    for i in range(b):
        q = question_span(input_ids[i], mask[i], visual[i], ends, skip)
        pixels = None if run.pixels is None else run.pixels[i * count : (i + 1) * count]
        view = None if views is None else views[i * count : (i + 1) * count]
        ids = input_ids[i, q]
        scored = None
        if run.patch_scores is not None:  # the encoder scored: read on demand
            scored = partial(_sample_scores, run, slice(i * count, (i + 1) * count))
        sel: Selection = rt.plan.select(
            Visuals(feats[i], (h, w), text.embed_tokens(ids), ids, layers, pixels, view, grid, thumbnail, scored)
        )
        picks.append(frames.Placed(at[i, sel.cells], sel.features, sel.cells))
        chosen.append(sel)
    new = frames.place(picks, visual, feats)
    rt.record.encoder_tokens = [t + extra for t in run.tokens]
    rt.record.encoder_original = [run.prefix + run.patch_grid[0] * run.patch_grid[1]] * len(run.tokens)
    layout = Layout(
        visual=input_ids.gather(1, new.index) == token,
        images=[(h, w)] * count,
        original=per_sample,
        boxes=list(boxes(run.rows, run.cols, s)),
        patch_grid=run.patch_grid,
        cells=new.cells,
        schedules=[list(s.counts) for s in chosen],
        stage={key: [s.info[key] for s in chosen] for key in chosen[0].info},
        first=first_cells(chosen, per_sample, input_ids.device),
    )
    rt.record.layout = layout
    whole = all(len(s.cells) == per_sample and all(c == per_sample for c in s.counts) for s in chosen)
    if whole and all(bool((s.sizes == 1).all()) for s in chosen):  # every token kept as it was: the model as it is
        rt.record.llm_visual_tokens = [per_sample] * layers
        rt.record.kept_cells = [torch.arange(per_sample).expand(b, -1)] * layers
        return None
    positions = (position_ids if position_ids is not None else prompt_positions(mask)).expand(b, -1)
    mask = mask.gather(1, new.index).masked_fill(new.pad, 0)
    rt.pending = layout
    return input_ids.gather(1, new.index), mask, positions.gather(1, new.index), with_features(encoded, new.features)


def _sample_scores(run, images: slice) -> tuple[Tensor, Tensor]:
    """One sample's share (its ``images``) of the scores and keys the encoder's "score" step gives the batch."""
    return tuple(t[images] for t in run.patch_scores())


def first_cells(chosen: list[Selection], cells: int, device) -> Tensor | None:
    """(B, cells) bool: the input cells each sample's selection ranks first in later drops; None when none does."""
    if all(s.first is None for s in chosen):
        return None
    out = torch.zeros(len(chosen), cells, dtype=torch.bool, device=device)
    for i, s in enumerate(chosen):
        if s.first is not None:
            out[i, s.cells[s.first]] = True
    return out


def coarse_views(rt, run, h: int, w: int) -> tuple[tuple[int, int] | None, Tensor | None, int]:
    """For a plan that reads a coarser view of each image (``view_grid``): its grid, the projected tokens of every
    image of the batch at that grid (one tower call for the batch), and the tokens that call adds to each encoder
    layer per image (so encoder_tokens and its FLOPs count the second pass). (None, None, 0) for other plans, and
    for a plan whose ``view_grid`` is None for this grid (it builds its coarse tokens from the full view)."""
    view_grid = getattr(rt.plan, "view_grid", None)
    grid = None if view_grid is None else view_grid(h, w)
    if grid is None:
        return None, None, 0
    if run.pixels is None:
        raise RuntimeError(f"{rt.plan.name} reads a coarser view but the runtime kept no pixels; this is a bug")
    return grid, rt.encode_view(run.pixels, grid), run.prefix + grid[0] * grid[1]


def with_features(encoded, features: Tensor):
    """A copy of the encoder output that carries ``features`` (B, k, D) instead, in the form the family's forward
    reads: one tensor where the model gave one (InternVL), else a list (the caller's object stays as it was)."""
    pooled = features.flatten(0, 1) if isinstance(encoded.pooler_output, Tensor) else list(features)
    out = BaseModelOutputWithPooling(last_hidden_state=encoded.last_hidden_state, pooler_output=pooled)
    object.__setattr__(out, RUN, run_of(encoded))
    return out


def call_shrunk(rt, original, run, input_ids: Tensor, attention_mask, position_ids, encoded, **call):
    """Call the model's own forward on the shrunk prompt with the compressed features; never leaves a layout staged."""
    try:
        with ours():
            if getattr(rt.plan, "temporal", None) is not None:
                shrunk = shrink_frames(rt, run, input_ids, attention_mask, position_ids, encoded)
            elif getattr(rt.plan, "select", None) is not None:
                shrunk = shrink_set(rt, run, input_ids, attention_mask, position_ids, encoded)
            else:
                shrunk = shrink(rt, run, input_ids, attention_mask, position_ids)
                shrunk = shrunk and (*shrunk, encoded)
        if shrunk is not None:
            input_ids, attention_mask, position_ids, encoded = shrunk
        return original(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            mm_encoder_outputs={"image": encoded},
            **call,
        )
    finally:
        rt.pending = None  # consumed by the text model, or discarded if the call failed before reaching it
