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

from tokenfunnel.adapters.forward import placeholder_forward
from tokenfunnel.adapters.guards import refuse_labels

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
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy

        def check() -> None:
            if kwargs.get("image_sizes") is not None:
                raise ValueError("image_sizes (LLaVA-NeXT-style tiling) is not supported by the LLaVA adapter")
            if strategy != self.strategy:
                raise ValueError(
                    f"vision_feature_select_strategy={strategy!r} would cut the patch grid; use {self.strategy!r}"
                )

        def encode():
            return self.core.get_image_features(
                pixel_values=pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=strategy,
                return_dict=True,
            )

        return placeholder_forward(
            rt,
            original,
            model="LLaVA",
            placeholder="<image>",
            encode=encode,
            check=check,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            mm_encoder_outputs=mm_encoder_outputs,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )


ADAPTER = LlavaAdapter
