"""LLaVA family (CLIP, SigLIP or DINOv2 towers; the bundled VLM is one): where visual tokens live.

Each image fills a run of ``<image>`` placeholders, one per patch of its grid, in raster order. When the encoder
merges, the run is shrunk before the embeddings are merged: each merged token takes the placeholder (and so the
RoPE position) of the centre patch it covers, and text keeps its positions, so the language model sees the
unmerged sequence's numbering.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tokenfunnel.adapters import placeholders
from tokenfunnel.adapters.guards import refuse_labels
from tokenfunnel.runtime.cache import CACHE, pop_cache

CLASSES = ("LlavaForConditionalGeneration", "LlavaModel")


class LlavaAdapter:
    family = "llava"
    scale = 1  # one language-model token per patch
    placeholder = "<image>"
    select_stage = True  # placeholders.shrink_set runs select stages (lod, difficulty, learned, detail) here

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

    def nominal_grid(self) -> tuple[int, int]:
        """The patch grid of one image at the size the model is fed, for checks made before any image is seen.

        CLIP and SigLIP towers are fed their ``image_size``; a DINOv2 tower's ``image_size`` only sizes its position
        table (518 pixels) and is interpolated to what it is fed (224 for the bundled VLM), which the LLaVA config's
        ``image_seq_length`` states.
        """
        vc = self.vision_tower.config
        side = vc.image_size // vc.patch_size
        seq = getattr(self.config, "image_seq_length", None)
        if vc.model_type == "dinov2" and seq and math.isqrt(seq) ** 2 == seq:
            side = math.isqrt(seq)
        return side, side

    def token_grid(self) -> tuple[int, int]:
        """The grid of language-model tokens of one image: its patch grid (one token per patch)."""
        return self.nominal_grid()

    def patch_grid(self, pixel_values: Tensor) -> tuple[int, int]:
        return pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size

    def image_features(self, pixel_values: Tensor, **kwargs) -> Tensor:
        """(I, n, D) projected tokens of ``pixel_values`` through the model's own tower, feature layer and projector
        (``kwargs`` go to the tower, e.g. ``interpolate_pos_encoding``)."""
        out = self.core.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=self.config.vision_feature_layer,
            vision_feature_select_strategy=self.strategy,
            return_dict=True,
            **kwargs,
        )
        return torch.stack(list(out.pooler_output))

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
        inputs_embeds=None,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
        mm_encoder_outputs=None,
        **kwargs,
    ):
        cache = pop_cache(kwargs)  # taken out of kwargs before they are passed on
        call = dict(
            **{CACHE: cache},
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )
        encoded = (mm_encoder_outputs or {}).get("image")
        if pixel_values is None and encoded is None:  # text only, or decoding after the prefill
            return original(
                input_ids=input_ids,
                attention_mask=attention_mask,
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
        run = placeholders.run_of(encoded)
        return placeholders.call_shrunk(
            rt, original, run, input_ids, attention_mask, position_ids, encoded, inputs_embeds=inputs_embeds, **call
        )


ADAPTER = LlavaAdapter
