"""A Qwen2-VL / Qwen2.5-VL video under a plan with temporal stages (pvc): the frames folded are the video's temporal
slices (each the tower's view of 2 input frames), as the tower's merger leaves them, one grid of cells each.

Each surviving token keeps the placeholder, and so the M-RoPE position (temporal row included), of its own cell in
the first slice it stands for; the other placeholders of the video go. Batches whose videos keep different counts
are padded with masked slots, as for the LLaVA family (see ``adapters.frames``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tokenfunnel.adapters import frames, placeholders
from tokenfunnel.ops.positions import mrope_next


def fold(rt, run, input_ids: Tensor, mask: Tensor, positions: Callable[[], Tensor], encoded, merge: int):
    """Fold each sample's one video (``run``: a ``QwenRun`` over one video per sample, all of one grid).

    ``positions`` gives the unshrunk prompt's M-RoPE positions (3, B, T), asked only when the prompt changes.
    Returns None when nothing is folded, dropped or merged (call the model unchanged), else the shortened
    ``input_ids``, ``attention_mask``, positions and the encoder output carrying the features that stay, with
    ``rt.pending`` set for the language model.
    """
    token = rt.adapter.video_token_id
    b = input_ids.shape[0]
    t, h, w = run.grid_thw[0].tolist()
    h, w = h // merge, w // merge
    hh, ww = (side // merge for side in run.merged_thw[0, 1:].tolist())
    feats = torch.cat(list(encoded.pooler_output)).view(b, t, hh * ww, -1)
    visual = input_ids == token
    at = visual.nonzero()[:, 1].view(b, t, h * w)
    centre = torch.cat([placeholders.centres(r.rows, r.cols, 1, w) for r in run.runs]).view(b, t, hh * ww)
    new = frames.rebuild(rt.plan.temporal, feats, at.gather(2, centre), visual)
    slice_boxes = [next(placeholders.boxes(r.rows, r.cols, 1)) for r in run.runs]
    layout = frames.record(rt, new, input_ids, token, slice_boxes, (hh, ww), (h, w))
    if layout is None:
        return None
    mask = mask.gather(1, new.index).masked_fill(new.pad, 0)
    unshrunk = positions()
    kept = unshrunk.gather(2, new.index.unsqueeze(0).expand(3, -1, -1))
    layout.next_position = mrope_next(unshrunk)  # the video's last slice, folded away, may have held the largest
    rt.pending = layout
    return input_ids.gather(1, new.index), mask, kept, placeholders.with_features(encoded, new.features)
