"""Idefics3 and SmolVLM: a SigLIP-like encoder, then a pixel-shuffle connector that stacks s x s neighbouring patches
into one token (s = ``config.scale_factor``), so an image tile of h x w patches fills a run of (h/s) * (w/s)
``<image>`` placeholders. The processor splits a large image into tiles plus a downscaled global view; each is
one image of ``pixel_values`` and one placeholder run of the prompt, in the same order.

OIM keeps the merged grid's sides multiples of s (see ``tokenfunnel.adapters.shuffle``); the connector's shuffle,
which assumes a square grid, is given the merged grid when it is not square. In the language model each run is
shrunk like LLaVA's, every token taking the position of the placeholder that held its centre patch.
"""

from __future__ import annotations

from tokenfunnel.adapters import shuffle
from tokenfunnel.adapters.forward import placeholder_forward
from tokenfunnel.adapters.guards import refuse_labels

CLASSES = (
    "Idefics3ForConditionalGeneration",
    "Idefics3Model",
    "SmolVLMForConditionalGeneration",
    "SmolVLMModel",
)


class Idefics3Adapter:
    placeholder = "image"
    family = "idefics3"
    select_stage = True  # placeholders.shrink_set runs select stages on each tile's shuffled grid
    thumbnail_last = True  # a picture cut into tiles comes as its tiles, then a thumbnail of the whole

    def __init__(self, model) -> None:
        self.core = model.model if type(model).__name__.endswith("ForConditionalGeneration") else model
        self.owner = model if model is not self.core else None  # the model with the LM head, if any
        self.config = self.core.config
        self.vision_tower = self.core.vision_model
        self.text_model = self.core.text_model
        self.connector = self.core.connector
        self.patch_size = self.config.vision_config.patch_size
        self.scale = int(self.config.scale_factor)
        self.prefix = 0  # no class token: every encoder token is a patch
        self.encoder_layers = list(self.vision_tower.encoder.layers)
        self.usable_layers = len(self.encoder_layers)  # the connector reads the last layer (after post_layernorm)
        self.image_token_id = self.config.image_token_id

    def token_grid(self) -> tuple[int, int]:
        """The grid of language-model tokens of one tile at the size the processor cuts: patches / s per side."""
        side = self.config.vision_config.image_size // self.patch_size // self.scale
        return side, side

    def patch_grid(self, pixel_values) -> tuple[int, int]:
        return pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size

    def encoder_steps(self, plan, h: int, w: int) -> dict[int, tuple[str, int]]:
        return shuffle.scaled_steps(plan, h, w, self.usable_layers, self.scale)

    def install(self, runtime) -> None:
        # the connector infers a square grid from the token count; a merged grid may be rectangular
        original = self.connector.pixel_shuffle

        def pixel_shuffle(x, scale_factor=2):
            run = runtime.last_run
            if run is not None and x.shape[:2] == (len(run.size), run.grid[0] * run.grid[1]):
                if run.grid[0] != run.grid[1]:
                    return shuffle.shuffle(x, *run.grid, scale_factor)
            return original(x, scale_factor)

        runtime.patcher.set(self.connector, "pixel_shuffle", pixel_shuffle)
        runtime.patcher.forward(self.core, lambda original, *a, **k: self._forward(runtime, original, *a, **k))
        if self.owner is not None:
            runtime.patcher.forward(self.owner, refuse_labels)

    def _forward(
        self,
        rt,
        original,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        pixel_values=None,
        pixel_attention_mask=None,
        mm_encoder_outputs=None,
        **kwargs,
    ):
        return placeholder_forward(
            rt,
            original,
            model=type(self.core).__name__,
            placeholder="<image>",
            encode=lambda: self.core.get_image_features(pixel_values, pixel_attention_mask, return_dict=True),
            text_only=dict(pixel_attention_mask=pixel_attention_mask),
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )


ADAPTER = Idefics3Adapter
