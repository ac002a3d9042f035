"""InternVL: an InternViT encoder with a class token, then a pixel shuffle (``downsample_ratio`` 0.5 stacks 2 x 2
neighbouring patches) and an MLP projector. The processor cuts an image into tiles plus a thumbnail; each tile is
one image of ``pixel_values`` and the image's tiles fill one run of ``<IMG_CONTEXT>`` placeholders,
(h/2) * (w/2) per tile, in order.

OIM leaves the class token alone (the "default" feature strategy drops it) and keeps the merged grid's sides even
(see ``tokenfunnel.adapters.shuffle``). ``get_image_features`` reshapes the features to a square, so while the
encoder merges it is replaced by the same steps on the merged grid. In the language model each tile's share of the
run is shrunk like LLaVA's, every token taking the position of the placeholder that held its centre patch.
"""

from __future__ import annotations

import functools

from tokenfunnel.adapters import shuffle
from tokenfunnel.adapters.forward import placeholder_forward
from tokenfunnel.adapters.guards import refuse_labels
from tokenfunnel.runtime.state import RUN

CLASSES = ("InternVLForConditionalGeneration", "InternVLModel")


class InternVLAdapter:
    placeholder = "<IMG_CONTEXT>"
    family = "internvl"
    select_stage = True  # placeholders.shrink_set runs select stages on each tile's shuffled grid
    thumbnail_last = True  # a picture cut into tiles comes as its tiles, then a thumbnail of the whole

    def __init__(self, model) -> None:
        self.core = model.model if type(model).__name__ == "InternVLForConditionalGeneration" else model
        self.owner = model if model is not self.core else None  # the model with the LM head, if any
        self.config = self.core.config
        self.vision_tower = self.core.vision_tower
        self.text_model = self.core.language_model
        vc = self.config.vision_config
        self.patch_size = tuple(vc.patch_size) if isinstance(vc.patch_size, list | tuple) else (vc.patch_size,) * 2
        ratio = self.config.downsample_ratio
        if abs(1 / ratio - round(1 / ratio)) > 1e-6:
            raise ValueError(f"downsample_ratio={ratio} is not 1/s for an integer s; not supported")
        self.scale = round(1 / ratio)
        self.prefix = 1  # the class token
        if self.config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"vision_feature_select_strategy={self.config.vision_feature_select_strategy!r} keeps the class token "
                "in the grid InternVL's pixel shuffle reshapes; only 'default' is supported"
            )
        self.encoder_layers = list(self.vision_tower.encoder.layer)
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError("InternVL models that concatenate several vision feature layers are not supported yet")
        # hidden_states[k] is the output of layer k-1; only layers before the selected one feed the projector
        n = len(self.encoder_layers)
        self.feature_layer = layer
        self.usable_layers = layer if layer >= 0 else n + 1 + layer
        self.image_token_id = self.config.image_token_id

    def token_grid(self) -> tuple[int, int]:
        """The grid of language-model tokens of one tile at the size the processor cuts: patches / s per side."""
        size = self.config.vision_config.image_size
        h, w = tuple(size) if isinstance(size, list | tuple) else (size, size)
        return h // self.patch_size[0] // self.scale, w // self.patch_size[1] // self.scale

    def patch_grid(self, pixel_values) -> tuple[int, int]:
        return pixel_values.shape[-2] // self.patch_size[0], pixel_values.shape[-1] // self.patch_size[1]

    def encoder_steps(self, plan, h: int, w: int) -> dict[int, tuple[str, int]]:
        return shuffle.scaled_steps(plan, h, w, self.usable_layers, self.scale)

    def install(self, runtime) -> None:
        # get_image_features reshapes the encoder output to a square grid; a merged grid may be rectangular
        original = self.core.get_image_features

        @functools.wraps(original)  # generate() reads its signature to pick the encoder's arguments
        def get_image_features(pixel_values, vision_feature_layer=None, vision_feature_select_strategy=None, **kw):
            return self._image_features(
                runtime, original, pixel_values, vision_feature_layer, vision_feature_select_strategy, **kw
            )

        runtime.patcher.set(self.core, "get_image_features", get_image_features)
        runtime.patcher.forward(self.core, lambda original, *a, **k: self._forward(runtime, original, *a, **k))
        if self.owner is not None:
            runtime.patcher.forward(self.owner, refuse_labels)

    def _check(self, layer, strategy) -> tuple[int, str]:
        layer = self.feature_layer if layer is None else layer
        strategy = strategy or self.config.vision_feature_select_strategy
        if layer != self.feature_layer:
            raise ValueError(
                f"vision_feature_layer={layer} differs from the config's {self.feature_layer}, which the compression "
                "plan was built for; set it in the config before compressing"
            )
        if strategy != "default":
            raise ValueError(f"vision_feature_select_strategy={strategy!r} is not supported; use 'default'")
        return layer, strategy

    def _image_features(self, rt, original, pixel_values, layer, strategy, **kwargs):
        layer, strategy = self._check(layer, strategy)
        if not rt.encoder_steps(*self.patch_grid(pixel_values)):  # no merging: the model's own code, bit for bit
            return original(
                pixel_values=pixel_values,
                vision_feature_layer=layer,
                vision_feature_select_strategy=strategy,
                **kwargs,
            )
        # InternVLModel.get_image_features, with the merged grid in place of the square it assumes
        kwargs.pop("return_dict", None)
        if layer != -1:
            kwargs["output_hidden_states"] = True
        out = self.vision_tower(pixel_values=pixel_values.to(dtype=self.core.dtype), return_dict=True, **kwargs)
        run = getattr(out, RUN)
        features = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        features = features[:, self.prefix :, :]
        features = features.reshape(features.shape[0], *run.grid, -1)
        features = self.core.pixel_shuffle(features, scale_factor=self.config.downsample_ratio)
        features = features.reshape(features.shape[0], -1, features.shape[-1])
        out.pooler_output = self.core.multi_modal_projector(features)
        return out

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

        def encode():
            return self.core.get_image_features(
                pixel_values=pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                return_dict=True,
            )

        return placeholder_forward(
            rt,
            original,
            model="InternVL",
            placeholder="<IMG_CONTEXT>",
            encode=encode,
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


ADAPTER = InternVLAdapter
