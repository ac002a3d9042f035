"""LLaVA family (CLIP, SigLIP or DINOv2 towers; the bundled VLM is one): where visual tokens live.

Each image fills a run of ``<image>`` placeholders, one per patch of its grid, in raster order. When the encoder
merges, the run is shrunk before the embeddings are merged: each merged token takes the placeholder (and so the
RoPE position) of the centre patch it covers, and text keeps its positions, so the language model sees the
unmerged sequence's numbering.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenfunnel.adapters.guards import refuse_labels
from tokenfunnel.runtime.state import RUN, Layout

CLASSES = ("LlavaForConditionalGeneration", "LlavaModel")


def prompt_positions(mask: Tensor) -> Tensor:
    """Positions counting real tokens only, so a left-padded row is numbered like the same prompt alone."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class LlavaAdapter:
    family = "llava"

    def __init__(self, model) -> None:
        self.core = model.model if type(model).__name__ == "LlavaForConditionalGeneration" else model
        self.config = self.core.config
        self.vision_tower = self.core.vision_tower
        self.text_model = self.core.language_model
        vc = self.vision_tower.config
        self.patch_size = vc.patch_size
        self.prefix = 0 if "siglip" in vc.model_type else 1 + getattr(vc, "num_register_tokens", 0)
        inner = getattr(self.vision_tower, "vision_model", self.vision_tower)
        self.encoder_layers = list(inner.encoder.layers if hasattr(inner.encoder, "layers") else inner.encoder.layer)
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError("LLaVA models that concatenate several vision feature layers are not supported yet")
        # hidden_states[k] is the output of layer k-1; only layers before the selected one feed the projector
        n = len(self.encoder_layers)
        self.usable_layers = layer if layer >= 0 else n + 1 + layer
        self.image_token_id = self.config.image_token_id
        # the grid must reach the projector whole: "default" drops exactly one leading token, "full" none
        self.strategy = "default" if self.prefix == 1 else "full"
        if self.config.vision_feature_select_strategy != self.strategy or self.prefix > 1:
            raise ValueError(
                f"a {vc.model_type} tower with {self.prefix} class/register tokens needs "
                f"vision_feature_select_strategy={self.strategy!r} for its patch grid to reach the projector intact "
                f"(the model uses {self.config.vision_feature_select_strategy!r}); this model is not supported"
            )
        self.owner = model if model is not self.core else None

    def patch_grid(self, pixel_values: Tensor) -> tuple[int, int]:
        return pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size

    def install(self, runtime) -> None:
        runtime.patcher.forward(self.core, lambda original, *a, **k: self._forward(runtime, original, *a, **k))
        if self.owner is not None:
            runtime.patcher.forward(self.owner, refuse_labels)

    def _forward(
        self,
        rt,
        original,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
        mm_encoder_outputs=None,
        **kwargs,
    ):
        call = dict(
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )
        encoded = (mm_encoder_outputs or {}).get("image")
        if pixel_values is None and encoded is None:  # text only, or decoding after the prefill
            return original(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                position_ids=position_ids,
                mm_encoder_outputs=mm_encoder_outputs,
                **call,
            )
        if pixel_values is not None and encoded is not None:
            raise ValueError("pass pixel_values or mm_encoder_outputs, not both")
        if input_ids is None:
            raise ValueError("a compressed LLaVA needs input_ids (to find the <image> placeholders), not inputs_embeds")
        if kwargs.get("image_sizes") is not None:
            raise ValueError("image_sizes (LLaVA-NeXT-style tiling) is not supported by the LLaVA adapter")
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        if strategy != self.strategy:
            raise ValueError(
                f"vision_feature_select_strategy={strategy!r} would cut the patch grid; use {self.strategy!r}"
            )
        if encoded is None:  # generate() encodes images before the prefill and hands them over as mm_encoder_outputs
            encoded = self.core.get_image_features(
                pixel_values=pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=strategy,
                return_dict=True,
            )
        run = getattr(encoded, RUN, None)
        if run is None:
            raise ValueError(
                "these image features were computed without compression; encode them on the compressed model"
            )
        b, t = input_ids.shape
        h, w = run.patch_grid
        per_image = h * w
        placeholders = (input_ids == self.image_token_id).sum(1)
        per_sample = int(placeholders[0])
        if per_sample == 0:
            raise ValueError("the prompt holds no <image> placeholder; build inputs with the model's processor")
        if (
            bool((placeholders != per_sample).any())
            or per_sample % per_image
            or per_sample // per_image * b != len(run.size)
        ):
            raise ValueError(
                f"each sample must hold the same number of images of {per_image} placeholders "
                f"(got {placeholders.tolist()} for {len(run.size)} images); batch prompts with equal image counts"
            )
        images = per_sample // per_image
        hh, ww = run.grid
        counts = rt.plan.llm_counts(images * hh * ww, per_sample, self.text_model.config.num_hidden_layers)
        rt.record.encoder_tokens = list(run.tokens)
        rt.record.encoder_original = [run.prefix + per_image] * len(run.tokens)
        if (hh, ww) == (h, w) and all(c == per_sample for c in counts):  # nothing to compress: the model as it is
            rt.record.layout = Layout(
                visual=input_ids == self.image_token_id,
                images=[(h, w)] * images,
                original=per_sample,
                boxes=list(_boxes(run.rows, run.cols)),
                patch_grid=(h, w),
            )
            rt.record.llm_visual_tokens = list(counts)
            rt.record.kept_cells = [torch.arange(per_sample).expand(b, -1)] * len(counts)
            return original(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                position_ids=position_ids,
                mm_encoder_outputs={"image": encoded},
                **call,
            )
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        positions = (position_ids if position_ids is not None else prompt_positions(mask)).expand(b, -1)
        cols = (input_ids == self.image_token_id).nonzero()[:, 1].view(b, images, per_image)
        centre = _centres(run.rows, run.cols, w).view(b, images, -1)
        keep = input_ids != self.image_token_id
        keep[torch.arange(b, device=keep.device)[:, None], cols.gather(2, centre).flatten(1)] = True
        idx = keep.nonzero()[:, 1].view(b, -1)
        ids, positions = input_ids.gather(1, idx), positions.gather(1, idx)
        call["attention_mask"] = mask.gather(1, idx)
        rt.record.layout = rt.pending = Layout(
            visual=ids == self.image_token_id,
            images=[(hh, ww)] * images,
            original=per_sample,
            boxes=list(_boxes(run.rows, run.cols)),
            patch_grid=(h, w),
        )
        try:
            return original(input_ids=ids, position_ids=positions, mm_encoder_outputs={"image": encoded}, **call)
        finally:
            rt.pending = None  # consumed by the text model, or discarded if the call failed before reaching it


def _centres(rows: Tensor, cols: Tensor, w: int) -> Tensor:
    """Raster index of the centre patch each merged token covers, (I, h' * w')."""
    r = (rows[..., 0] + rows[..., 1]) // 2
    c = (cols[..., 0] + cols[..., 1]) // 2
    return (r[:, :, None] * w + c[:, None, :]).flatten(1)


def _boxes(rows: Tensor, cols: Tensor):
    """Per image, (h' * w', 4) [row0, row1, col0, col1] of the original patches each token covers."""
    hh, ww = rows.shape[1], cols.shape[1]
    for r, c in zip(rows, cols, strict=True):
        yield torch.cat([r[:, None, :].expand(hh, ww, 2), c[None, :, :].expand(hh, ww, 2)], dim=-1).flatten(0, 1)


ADAPTER = LlavaAdapter
