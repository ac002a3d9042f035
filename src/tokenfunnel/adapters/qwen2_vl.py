"""Qwen2-VL and Qwen2.5-VL: where visual tokens live, how M-RoPE numbers them, and OIM inside their vision tower.

The tower takes the patches of all images packed into one (N, C) sequence, each image in 2x2-block order (the
four patches that the final merger fuses into one language-model token are adjacent), attends within each image
(Qwen2.5-VL: within windows of blocks, except in its full-attention blocks), and uses a 2D rotary embedding of
each patch's (row, col). Grids (``image_grid_thw``) are counted in patches; the language model sees one token per
2x2 block, so the LLM grid of an image is (h/2, w/2) and a *cell* below is one such block.

Encoder (OIM). Merges fuse whole columns (or rows) of blocks: patch k of one block is averaged with patch k of its
neighbour, so every block keeps its four patches, the patch grid stays even and the 2x2 merger still applies. A
merged patch takes the size-weighted mean of the (row, col) it covers as its rotary position (fractional), and the
packing (cu_seqlens, Qwen2.5's windows) is rebuilt for the smaller grids. The tower's own modules do all the
work; only its short outer loop is rerun here so the grids can change between blocks. Proportional attention is
not available (the tower's attention takes no additive bias).

Language model. Each image fills a run of ``image_token_id`` placeholders, one per cell. M-RoPE positions
(3, B, T) are the unmodified model's own (``get_rope_index`` on the unshrunk prompt and grids, or the caller's /
``generate()``'s). When OIM merged, the run is shrunk before the embeddings are merged: each merged token takes the
placeholder, and so the M-RoPE position, of the centre cell it covers; text keeps its positions, so decoding
continues with the unmodified model's numbering. ``Layout.boxes`` and ``Layout.patch_grid`` are in cells (2x2
blocks), the units of the tokens the unmodified model shows its language model.

Videos (``pixel_values_videos``, ``video_grid_thw``): the tower sees a (t, h, w) video as t temporal slices (each
2 input frames) and attends each slice on its own, so OIM treats every slice as an image, and the language model
sees one grid of ``video_token_id`` cells per slice, scored per slice; M-RoPE positions (temporal row included) are
again the unmodified model's, and decoding without position_ids continues after the unshrunk prompt's largest
position in any row, as ``get_rope_index``'s deltas do (a video's temporal row can run past its closing text;
``generate()`` passes positions of its own, taken as given). Under a plan with temporal stages (pvc) the slices
are folded and thinned after the tower (see ``adapters.qwen2_vl_frames``); images are then one-frame videos, on
which those stages do nothing.

Refused: a call holding both images and videos, and with temporal stages, more than one video per sample. Every
sample of a batch must hold images (videos) of the same grids in the same order: the decoder loop prunes the same
number of tokens from every sample, unless the temporal stages left them different counts.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import modeling_outputs
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import get_max_seqlen
from transformers.vision_utils import get_vision_attention_seqlens, get_vision_position_ids, get_vision_window_index

from tokenfunnel.adapters import placeholders, qwen2_vl_frames
from tokenfunnel.ops.merge import initial_spans, merge_columns, merge_rows
from tokenfunnel.ops.positions import mrope_next
from tokenfunnel.runtime.cache import CACHE, pop_cache
from tokenfunnel.runtime.state import RUN, EncoderRun, Layout

# transformers >= 5.24 wraps the model output with the encoder outputs; before it, None
MultimodalBaseModelOutputWithPast = getattr(modeling_outputs, "MultimodalBaseModelOutputWithPast", None)

CLASSES = (
    "Qwen2VLForConditionalGeneration",
    "Qwen2VLModel",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen2_5_VLModel",
)


@dataclass
class QwenRun:
    """What the compressed vision tower did to the images (or videos) of one call, in the order of their grids."""

    grid_thw: Tensor  # (I, 3) grids handed in, in patches (images: t = 1; videos: t temporal slices)
    merged_thw: Tensor  # (I, 3) grids leaving the tower, in patches (h, w stay even)
    runs: list[EncoderRun]  # per temporal slice of each: sizes and row/column spans, in cells (2x2 blocks)
    tokens: list[list[int]]  # per temporal slice of each: patches entering each vision block

    @property
    def merged(self) -> bool:
        return bool((self.merged_thw != self.grid_thw).any())


class Qwen2VLAdapter:
    family = "qwen2_vl"

    def __init__(self, model) -> None:
        self.core = model.model if type(model).__name__.endswith("ForConditionalGeneration") else model
        self.config = self.core.config
        self.vision_tower = self.core.visual
        self.text_model = self.core.language_model
        self.merge = self.vision_tower.spatial_merge_size
        self.blocks = list(self.vision_tower.blocks)
        self.usable_layers = len(self.blocks)  # every block feeds the merger
        self.windowed = hasattr(self.vision_tower, "fullatt_block_indexes")  # Qwen2.5-VL
        self.image_token_id = self.config.image_token_id
        self.video_token_id = self.config.video_token_id
        # the runtime's generic in-encoder merging expects a batched ViT; this tower's merging is driven from here
        self.encoder_layers: list = []

    # -- installation -------------------------------------------------------------------------------------------
    def install(self, runtime) -> None:
        core = self.core
        images, videos = core.get_image_features, core.get_video_features
        adapter = self

        # real signatures: generate() reads them to hand the pixels and grids to the encoder before prefill
        def get_image_features(_self, pixel_values, image_grid_thw=None, **kwargs):
            return adapter._features(runtime, images, pixel_values, image_grid_thw, "image", **kwargs)

        def get_video_features(_self, pixel_values_videos, video_grid_thw=None, **kwargs):
            return adapter._features(runtime, videos, pixel_values_videos, video_grid_thw, "video", **kwargs)

        runtime.patcher.set(core, "get_image_features", types.MethodType(get_image_features, core))
        runtime.patcher.set(core, "get_video_features", types.MethodType(get_video_features, core))
        runtime.patcher.forward(core, lambda original, *a, **k: self._forward(runtime, original, *a, **k))

    # -- vision tower -------------------------------------------------------------------------------------------
    def _features(self, rt, original, pixel_values, grid_thw, kind: str, **kwargs):
        if grid_thw is None:
            raise ValueError(f"Qwen2-VL needs {kind}_grid_thw with its pixels; build inputs with the model's processor")
        grids = grid_thw.tolist()
        if kind == "image" and any(t != 1 for t, _, _ in grids):
            raise ValueError(f"image grids must have t=1 (got {grids}); pass videos as pixel_values_videos")
        # the tower attends each temporal slice of a video on its own, so OIM treats every slice as an image
        slices = grid_thw.repeat_interleave(grid_thw[:, 0], dim=0)
        slices[:, 0] = 1
        m = self.merge
        steps = [rt.encoder_steps(h // m, w // m) for _, h, w in slices.tolist()]
        if any(steps) and rt.plan.proportional:
            raise NotImplementedError(
                "proportional attention is not available inside the Qwen2-VL vision tower; pass proportional=False"
            )
        device = pixel_values.device
        runs = [self._start(h // m, w // m, s, device) for (_, h, w), s in zip(slices.tolist(), steps, strict=True)]
        if not any(steps):  # nothing to merge: the tower as it is
            out = original(pixel_values, grid_thw, **kwargs)
            tokens = [[h * w] * len(self.blocks) for _, h, w in slices.tolist()]
            merged_thw = grid_thw
        else:
            for key in ("output_attentions", "output_hidden_states"):
                if kwargs.get(key):
                    raise ValueError(f"{key}=True is not available while the vision tower merges tokens")
            pixels = pixel_values.type(self.vision_tower.dtype)
            out, merged, tokens = self._tower(pixels, slices, runs)
            # every slice of a video has the same steps, so the same merged grid: its first slice's
            first = grid_thw[:, 0].cumsum(0) - grid_thw[:, 0]
            merged_thw = torch.cat([grid_thw[:, :1], merged[first, 1:]], dim=1)
            if kind == "video":  # one block of features per video, as the unmodified model returns them
                sizes = (merged_thw.prod(-1) // m**2).tolist()
                out.pooler_output = torch.split(torch.cat(out.pooler_output), sizes)
        object.__setattr__(out, RUN, QwenRun(grid_thw, merged_thw, runs, tokens))
        return out

    def _start(self, h: int, w: int, steps, device) -> EncoderRun:
        return EncoderRun(
            prefix=0,
            size=torch.ones(1, h, w, device=device),
            rows=initial_spans(1, h, device),
            cols=initial_spans(1, w, device),
            steps=steps,
            proportional=False,
            patch_grid=(h, w),
        )

    def _prepare(self, x: Tensor, pos: Tensor, grid_thw: Tensor):
        """Packing and rotary embeddings for the current grids: cu_seqlens, max_seqlen, and for Qwen2.5-VL the block
        window index, the patch order it implies and the windows' (cu_seqlens, max_seqlen); then (cos, sin)."""
        tower = self.vision_tower
        cu, longest = get_vision_attention_seqlens(grid_thw, tower.config)
        rope = tower.rotary_pos_emb(x, pos)
        if not self.windowed:
            return cu, longest, None, None, None, rope
        index, cu_win = get_vision_window_index(
            grid_thw, spatial_merge_size=self.merge, window_size=tower.window_size, patch_size=tower.patch_size
        )
        index = index.to(x.device)
        longest_win = get_max_seqlen(cu_win, tower.config, kwarg_name="max_window_seqlen")
        unit = self.merge**2
        order = (index[:, None] * unit + torch.arange(unit, device=x.device)).flatten()  # block order -> window order
        return cu, longest, index, order, (cu_win, longest_win), (rope[0][order], rope[1][order])

    def _tower(self, pixels: Tensor, grid_thw: Tensor, runs: list[EncoderRun]):
        """The tower's forward, with OIM steps between the attention and MLP halves of the scheduled blocks.

        Hidden states stay in the tower's own order (Qwen2.5-VL: window order) between merges, as in the original.
        """
        tower, m = self.vision_tower, self.merge
        unit = m * m
        device = pixels.device
        x = tower.patch_embed(pixels)
        pos = get_vision_position_ids(grid_thw, m).to(device=device, dtype=torch.float32)  # (N, 2) block order
        grids = grid_thw.clone()
        tokens: list[list[int]] = [[] for _ in runs]
        cu, longest, index, order, window, rope = self._prepare(x, pos, grids)
        if order is not None:
            x = x[order]
        for li, blk in enumerate(self.blocks):
            for i, (t, h, w) in enumerate(grids.tolist()):
                tokens[i].append(t * h * w)
            full = not self.windowed or li in tower.fullatt_block_indexes
            seqlens, most = (cu, longest) if full else window
            call = dict(cu_seqlens=seqlens, max_seqlen=most, position_embeddings=rope)
            if not any(li in run.steps for run in runs):
                x = blk(x, **call)
                continue
            x = x + blk.attn(blk.norm1(x), **call)
            if order is not None:
                x = x[torch.argsort(order)]
            x, pos = self._merge(x, pos, grids, runs, li)
            cu, longest, index, order, window, rope = self._prepare(x, pos, grids)
            if order is not None:
                x = x[order]
            x = x + blk.mlp(blk.norm2(x))
        merged = tower.merger(x)
        if index is not None:
            merged = merged[torch.argsort(index)]
        sizes = (grids.prod(-1) // unit).tolist()
        out = BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=torch.split(merged, sizes))
        return out, grids, tokens

    def _merge(self, x: Tensor, pos: Tensor, grids: Tensor, runs: list[EncoderRun], layer: int):
        """One OIM step on every image scheduled at ``layer``: x (N, C) and pos (N, 2) in block order; updates grids."""
        m = self.merge
        unit = m * m
        xs = list(x.split((grids.prod(-1)).tolist()))
        ps = list(pos.split((grids.prod(-1)).tolist()))
        for i, run in enumerate(runs):
            step = run.steps.get(layer)
            if step is None:
                continue
            axis, r = step
            h, w = run.grid
            cells = xs[i].reshape(1, h, w, unit * x.shape[-1])  # one cell = the four patches of a 2x2 block
            where = ps[i].reshape(1, h, w, unit, 2)
            size = run.size
            if axis == "cols":
                cells, run.size, info = merge_columns(cells, size, r)
                run.cols = info.spans(run.cols)
            else:
                cells, run.size, info = merge_rows(cells, size, r)
                run.rows = info.spans(run.rows)
            xs[i] = cells.reshape(-1, x.shape[-1])
            ps[i] = info.mean(where, size).reshape(-1, 2)
            hh, ww = run.grid
            grids[i, 1], grids[i, 2] = hh * m, ww * m
        return torch.cat(xs), torch.cat(ps)

    # -- language model -----------------------------------------------------------------------------------------
    def _forward(
        self,
        rt,
        original,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        use_cache=None,
        pixel_values=None,
        pixel_values_videos=None,
        image_grid_thw=None,
        video_grid_thw=None,
        mm_token_type_ids=None,
        mm_encoder_outputs=None,
        **kwargs,
    ):
        cache = pop_cache(kwargs)
        call = dict(attention_mask=attention_mask, use_cache=use_cache, **{CACHE: cache}, **kwargs)
        given = mm_encoder_outputs or {}
        images = pixel_values is not None or given.get("image") is not None
        videos = pixel_values_videos is not None or given.get("video") is not None
        if not images and not videos:
            if rt.owns_cache(cache):  # decoding after a compressed prefill
                call.pop("second_per_grid_ts", None)  # Qwen2.5-VL's video timing; the text model takes no such thing
                if inputs_embeds is None:
                    inputs_embeds = self.text_model.embed_tokens(input_ids)
                out = self.text_model(inputs_embeds=inputs_embeds, position_ids=_mrope(position_ids), **call)
                return _as_model_output(out)
            return original(
                input_ids=input_ids,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                video_grid_thw=video_grid_thw,
                mm_token_type_ids=mm_token_type_ids,
                mm_encoder_outputs=mm_encoder_outputs,
                **call,
            )
        kind = "video" if videos else "image"
        pixels, grid_thw = (pixel_values_videos, video_grid_thw) if videos else (pixel_values, image_grid_thw)
        encoded = given.get(kind)
        if pixels is not None and encoded is not None:
            name = "pixel_values_videos" if videos else "pixel_values"
            raise ValueError(f"pass {name} or mm_encoder_outputs, not both")
        if input_ids is None:
            raise ValueError(
                f"a compressed Qwen2-VL needs input_ids (to find the {kind} placeholders), not inputs_embeds"
            )
        token = self.video_token_id if videos else self.image_token_id
        if images and videos or bool((input_ids == (self.image_token_id if videos else self.video_token_id)).any()):
            raise NotImplementedError(
                "the compressed Qwen2-VL takes images or videos in one call, not both; send them in separate calls, "
                "or call handle.remove() first"
            )
        if encoded is None:
            features = self.core.get_video_features if videos else self.core.get_image_features
            encoded = features(pixels, grid_thw, return_dict=True)
        run: QwenRun = placeholders.run_of(encoded)
        b = input_ids.shape[0]
        m = self.merge
        grids = run.grid_thw.tolist()
        counted = (input_ids == token).sum(1)
        per_sample = int(counted[0])
        v = len(grids) // b if b else 0
        same = len(grids) == v * b and all(grids[s * v : (s + 1) * v] == grids[:v] for s in range(b))
        # the language model sees a video as one grid of cells per temporal slice
        before = [(h // m, w // m) for t, h, w in grids[:v] for _ in range(t)]
        after = [(h // m, w // m) for t, h, w in run.merged_thw[:v].tolist() for _ in range(t)]
        if per_sample == 0:
            raise ValueError(f"the prompt holds no {kind} placeholder; build inputs with the model's processor")
        if not same or bool((counted != per_sample).any()) or per_sample != sum(h * w for h, w in before):
            raise ValueError(
                f"each sample must hold {kind}s of the same grids in the same order (got {counted.tolist()} "
                f"placeholders for {len(grids)} {kind}s of grids {grids}); batch prompts with equal {kind}s"
            )
        k = len(before)  # grids (images, or temporal slices) per sample
        rt.record.encoder_tokens = [sum(col) for col in zip(*run.tokens[:k], strict=True)]
        rt.record.encoder_original = [sum(m * m * h * w for h, w in before)] * len(self.blocks)
        unchanged = dict(
            input_ids=input_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            mm_token_type_ids=mm_token_type_ids,
            mm_encoder_outputs={kind: encoded},
            **{f"{kind}_grid_thw": grid_thw},
            **call,
        )

        def unshrunk_positions() -> Tensor:
            """M-RoPE positions (3, B, T) as the unmodified model numbers the unshrunk prompt."""
            passed = _mrope(position_ids)
            if passed is not None:
                return passed
            types_ = mm_token_type_ids
            if types_ is None:
                types_ = (input_ids == self.image_token_id).int() + 2 * (input_ids == self.video_token_id)
            positions, self.core.rope_deltas = self.core.get_rope_index(
                input_ids,
                mm_token_type_ids=types_,
                attention_mask=attention_mask,
                second_per_grid_ts=call.get("second_per_grid_ts"),  # Qwen2.5-VL: the temporal spacing of videos
                **{f"{kind}_grid_thw": run.grid_thw},
            )
            return positions

        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        try:
            if videos and getattr(rt.plan, "temporal", None) is not None:
                if v != 1:
                    raise NotImplementedError(
                        f"{getattr(rt.plan, 'name', 'this method')}'s temporal stages fold the slices of one video "
                        f"per sample (got {v}); send one video per prompt, or pass frame_threshold=None, "
                        "token_threshold=None"
                    )
                shrunk = qwen2_vl_frames.fold(rt, run, input_ids, mask, unshrunk_positions, encoded, m)
                if shrunk is None:  # nothing folded, dropped or merged: the model as it is
                    return original(**unchanged)
                input_ids, mask, positions, encoded = shrunk
            else:
                shrunk = self._shrink(rt, run, input_ids, mask, unshrunk_positions, token, before, after)
                if shrunk is None:
                    return original(**unchanged)
                input_ids, mask, positions = shrunk
            call["attention_mask"] = mask
            return original(input_ids=input_ids, position_ids=positions, mm_encoder_outputs={kind: encoded}, **call)
        finally:
            rt.pending = None  # consumed by the text model, or discarded if the call failed before reaching it

    def _shrink(self, rt, run: QwenRun, input_ids, mask, unshrunk_positions, token, before, after):
        """Record the layout; None when nothing is compressed, else the prompt with each merged token on the
        placeholder (and M-RoPE position) of the centre cell it covers, ``rt.pending`` set for the language model."""
        b, k = input_ids.shape[0], len(before)
        per_sample = sum(h * w for h, w in before)
        entering = sum(h * w for h, w in after)
        counts = rt.plan.llm_counts(entering, per_sample, self.text_model.config.num_hidden_layers)
        boxes = [next(placeholders.boxes(r.rows, r.cols, 1)) for r in run.runs]
        layout = dict(images=after, original=per_sample, boxes=boxes, patch_grid=before[0])
        if not run.merged and all(c == per_sample for c in counts):  # nothing to compress: the model as it is
            rt.record.layout = Layout(visual=input_ids == token, **layout)
            rt.record.llm_visual_tokens = list(counts)
            rt.record.kept_cells = [torch.arange(per_sample).expand(b, -1)] * len(counts)
            return None
        positions = unshrunk_positions()
        after_prompt = mrope_next(positions)
        if run.merged:  # one placeholder (and position) per merged token: the centre cell it covers
            starts = [0]
            for h, w in before[: k - 1]:
                starts.append(starts[-1] + h * w)
            centres = [
                starts[i % k] + placeholders.centres(r.rows, r.cols, 1, before[i % k][1])[0]
                for i, r in enumerate(run.runs)
            ]
            centre = torch.stack([torch.cat(centres[s * k : (s + 1) * k]) for s in range(b)])
            cols = (input_ids == token).nonzero()[:, 1].view(b, per_sample)
            keep = input_ids != token
            keep[torch.arange(b, device=keep.device)[:, None], cols.gather(1, centre)] = True
            idx = keep.nonzero()[:, 1].view(b, -1)
            input_ids, mask = input_ids.gather(1, idx), mask.gather(1, idx)
            positions = positions.gather(2, idx.unsqueeze(0).expand(3, -1, -1))
        layout["next_position"] = after_prompt
        rt.record.layout = rt.pending = Layout(visual=input_ids == token, **layout)
        return input_ids, mask, positions


def _as_model_output(out):
    """The text model's output in the form the family's model forward returns: from transformers 5.24 on a multimodal
    output that also names the encoder outputs (none while decoding), before it the text model's own."""
    if MultimodalBaseModelOutputWithPast is None:
        return out
    return MultimodalBaseModelOutputWithPast(**out, image_outputs=None, video_outputs=None)


def _mrope(position_ids: Tensor | None) -> Tensor | None:
    """(3, B, T) M-RoPE positions from what callers pass: generate()'s (4, B, T) leads with a text row."""
    if position_ids is None:
        return None
    if position_ids.dim() == 2:
        return position_ids[None].expand(3, -1, -1)
    return position_ids[-3:]


ADAPTER = Qwen2VLAdapter
