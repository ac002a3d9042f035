"""A video in a LLaVA-family prompt is one ``<image>`` run per frame; Qwen2-VL's video input is one placeholder run
of temporal slices (``adapters.qwen2_vl_frames``). After the encoder, the plan's temporal stage folds near-identical
frames together and drops unchanged tokens: each surviving token keeps the placeholder (so the position) of its own
cell in the first frame it stands for, and every other placeholder of the video goes.

Samples of a batch may keep different counts. The shorter ones are padded with masked slots (placeholders of
dropped frames carrying zero features, attention mask 0), so the batch stays rectangular and each sample
computes what it would alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tokenfunnel.ops.temporal import FrameMerge
from tokenfunnel.runtime.state import Layout


@dataclass
class Rebuilt:
    """The prompt after the temporal (or select) stage."""

    index: Tensor  # (B, T') positions of the input sequence that stay, in order
    pad: Tensor  # (B, T') True at the masked slots that only pad a sample to the batch's visual count
    features: Tensor  # (B, k, D) the features of the visual slots of the kept sequence, in order (zeros at pads)
    cells: Tensor  # (B, k) their cell among the sample's merged frames (frame g, token j -> g * n + j); -1 at pads
    kept: list[int]  # per sample, visual tokens that stay
    merges: list[FrameMerge] = field(default_factory=list)  # per sample (temporal stages only)


@dataclass
class Placed:
    """One sample's tokens to place: ``features`` (k, D) at sequence positions ``at`` (k,), with Layout ``cells``."""

    at: Tensor
    features: Tensor
    cells: Tensor


def rebuild(
    temporal: Callable[[Tensor], tuple[FrameMerge, Tensor]], features: Tensor, slots: Tensor, visual: Tensor
) -> Rebuilt:
    """``features`` (B, F, n, D): each sample's frames after the encoder; ``slots`` (B, F, n): where each of their
    tokens sits in the sequence; ``visual`` (B, T): the sequence's placeholders."""
    n = features.shape[2]
    merges, picks = [], []
    for i in range(features.shape[0]):
        fm, keep = temporal(features[i])
        merges.append(fm)
        frames = list(enumerate(fm.first))
        picks.append(
            Placed(
                at=torch.cat([slots[i, f][keep[g]] for g, f in frames]),
                features=torch.cat([fm.merged[g][keep[g]] for g, _ in frames]),
                cells=torch.cat([g * n + keep[g].nonzero()[:, 0] for g, _ in frames]),
            )
        )
    new = place(picks, visual, features)
    new.merges = merges
    return new


def place(picks: list[Placed], visual: Tensor, like: Tensor) -> Rebuilt:
    """Put each sample's tokens at their placeholders and drop the other placeholders; ``visual`` (B, T) marks the
    sequence's placeholders, ``like`` gives the features' dtype and device."""
    b, t = visual.shape
    d = picks[0].features.shape[-1]
    placed = like.new_zeros(b, t, d)
    real = torch.zeros_like(visual)
    cell = torch.full((b, t), -1, dtype=torch.long, device=visual.device)
    for i, p in enumerate(picks):
        real[i, p.at] = True
        placed[i, p.at] = p.features.to(like.dtype)
        cell[i, p.at] = p.cells
    kept = real.sum(1)
    # pad with the first placeholders each sample gives up, so every sample has the batch's largest count
    spare = visual & ~real
    pad = spare & (spare.cumsum(1) <= (kept.max() - kept)[:, None])
    index = (~visual | real | pad).nonzero()[:, 1].view(b, -1)
    slot = visual.gather(1, index)
    rows = torch.arange(b, device=visual.device)[:, None]
    k = int(slot[0].sum())
    return Rebuilt(
        index=index,
        pad=pad.gather(1, index),
        features=placed[rows, index][slot].view(b, k, d),
        cells=cell.gather(1, index)[slot].view(b, k),
        kept=kept.tolist(),
    )


def summary(new: Rebuilt, frames: int, per_frame: int) -> dict:
    """For report(): what the temporal stages did to each sample's ``frames`` frames of ``per_frame`` tokens."""
    b = len(new.merges)
    return {
        "frames": [frames] * b,
        "merged_frames": [len(m.first) for m in new.merges],
        "frame_groups": [list(m.group) for m in new.merges],
        # each frame's mean token cosine with the running merged frame: where a video's cuts sit, to set the threshold
        "frame_similarity": [[round(x, 4) for x in m.similarity] for m in new.merges],
        "tokens_before": [frames * per_frame] * b,
        "tokens_after": new.kept,
    }


def record(
    rt, new: Rebuilt, input_ids: Tensor, token: int, boxes: list[Tensor], grid: tuple[int, int], patch: tuple[int, int]
) -> Layout | None:
    """Record on ``rt`` the layout the language model gets after the temporal stage: ``boxes`` of each input frame
    (B * frames, in order), each frame's ``grid`` after the encoder and ``patch`` grid before it.

    Returns None when nothing was merged, folded or pruned (the caller runs the model as it is), else the layout.
    """
    count = len(boxes) // input_ids.shape[0]
    per_sample = count * patch[0] * patch[1]
    layout = Layout(
        visual=input_ids.gather(1, new.index) == token,
        images=[grid] * max(len(m.first) for m in new.merges),
        original=per_sample,
        boxes=[boxes[i * count + f] for i, m in enumerate(new.merges) for f in m.first],
        patch_grid=patch,
        cells=new.cells,
        temporal=summary(new, count, grid[0] * grid[1]),
    )
    rt.record.layout = layout
    layers = rt.adapter.text_model.config.num_hidden_layers
    untouched = grid == patch and all(k == per_sample for k in new.kept)
    if untouched and all(c == per_sample for c in rt.plan.llm_counts(per_sample, per_sample, layers)):
        rt.record.llm_visual_tokens = [per_sample] * layers
        rt.record.kept_cells = [torch.arange(per_sample).expand(input_ids.shape[0], -1)] * layers
        return None
    return layout
