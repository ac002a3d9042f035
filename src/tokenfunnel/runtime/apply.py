"""Install a compression plan on one model instance through its family adapter, and take it off again."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from tokenfunnel.adapters.vit import halves
from tokenfunnel.runtime import decoder, encoder
from tokenfunnel.runtime.cache import CACHE, cache_of, pop_cache
from tokenfunnel.runtime.clock import ours
from tokenfunnel.runtime.patch import MARK, Patcher
from tokenfunnel.runtime.state import RUN, EncoderRun, Layout, Plan, Record

BOOK = "_tokenfunnel_book"  # attribute of a pruned cache: (runtime, CacheBook)
_UNSUPPORTED_OUTPUTS = ("output_attentions", "output_hidden_states")


def downscale(pixels: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """``pixels`` (I, 3, H, W) resized to a (gh, gw) patch grid: bilinear, antialiased (a smaller image, not a crop).
    Computed in float32 (the CPU's antialiased kernel has no bfloat16 or float16) and returned in ``pixels``' dtype."""
    size = (grid[0] * patch, grid[1] * patch)
    small = F.interpolate(pixels.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return small.to(pixels.dtype)


class Runtime:
    """Shared state of one compressed model: the active encoder run, the layout handed to the LLM, the record."""

    def __init__(self, model, plan: Plan, adapter) -> None:
        self.model, self.plan, self.adapter = model, plan, adapter
        self.patcher = Patcher()
        self.record = Record()
        self.run: EncoderRun | None = None
        self.last_run: EncoderRun | None = None
        self.pending: Layout | None = None
        self.bare = False  # True while the runtime itself calls the tower (encode_view): no run, no hooks

    # -- installation -------------------------------------------------------------------------------------------
    def install(self) -> None:
        check = getattr(self.plan, "check", None)
        if check is not None:  # a method that cannot honour its options on this model says so before patching
            check(self.adapter)
        try:
            self.patcher.set(self.model, MARK, self)
            if self.adapter.encoder_layers:
                self._install_encoder()
            self.patcher.forward(self.adapter.text_model, self._text_forward)
            self.adapter.install(self)
        except BaseException:
            self.patcher.undo()  # nothing half-patched is left behind
            raise

    def remove(self) -> None:
        self.patcher.undo()
        self.run = self.last_run = self.pending = None

    def _install_encoder(self) -> None:
        layers = self.adapter.encoder_layers
        split = halves(layers[0])
        for i, layer in enumerate(layers):
            self.patcher.forward(layer, encoder.layer_forward(i, layer, split, lambda: self.run))
        self.patcher.forward(self.adapter.vision_tower, self._vision_forward)

    # -- vision tower -------------------------------------------------------------------------------------------
    def encoder_steps(self, h: int, w: int) -> dict[int, tuple[str, int]]:
        """OIM steps for an h x w patch grid; adapters whose projector needs a coarser grid (pixel shuffle) decide."""
        if hasattr(self.adapter, "encoder_steps"):
            return self.adapter.encoder_steps(self.plan, h, w)
        return self.plan.encoder_steps(h, w, self.adapter.usable_layers)

    def input_grid(self, h: int, w: int) -> tuple[int, int] | None:
        """The smaller patch grid the encoder is shown when the method downsamples the image, else None."""
        resize = getattr(self.plan, "input_grid", None)
        return None if resize is None else resize(h, w)

    def encode_view(self, pixels, grid: tuple[int, int]) -> torch.Tensor:
        """(I, gh * gw, D) projected tokens of ``pixels`` (I, 3, H, W) downsampled to the (gh, gw) patch grid, as the
        unmodified tower and projector give them (a plan's coarser view, see ``Visuals.view``). The tower runs
        bare: this runtime starts no encoder run for it, so its own hooks and record are left as they were."""
        kwargs = {}
        if "interpolate_pos_encoding" in inspect.signature(self.adapter.vision_tower.forward).parameters:
            kwargs["interpolate_pos_encoding"] = True
        with ours():
            small = downscale(pixels, grid, self.adapter.patch_size)
        saved, self.run, self.bare = self.run, None, True
        try:
            return self.adapter.image_features(small, **kwargs)
        finally:
            self.run, self.bare = saved, False

    def _vision_forward(self, original, pixel_values, *args, **kwargs):
        if self.bare:
            return original(pixel_values, *args, **kwargs)
        given = pixel_values
        h, w = self.adapter.patch_grid(pixel_values)
        seen = self.input_grid(h, w)
        if seen is not None and seen != (h, w):
            with ours():
                pixel_values = downscale(pixel_values, seen, self.adapter.patch_size)
            if "interpolate_pos_encoding" in inspect.signature(original).parameters:
                kwargs["interpolate_pos_encoding"] = True  # CLIP/SigLIP only stretch their positions when asked
        else:
            seen = None
        steps = self.encoder_steps(*(seen or (h, w)))
        self.run = encoder.start_run(
            pixel_values.shape[0], h, w, self.adapter.prefix, steps, self.plan.proportional, pixel_values.device, seen
        )
        if getattr(self.plan, "needs_pixels", False):  # e.g. difficulty reads the image itself
            self.run.pixels = given
        try:
            out = original(pixel_values, *args, **kwargs)
        finally:
            self.last_run, self.run = self.run, None
        object.__setattr__(out, RUN, self.last_run)  # travels with the features, e.g. through generate()
        return out

    # -- language model -----------------------------------------------------------------------------------------
    def _text_forward(
        self,
        original,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        cache = pop_cache(kwargs)
        layout, self.pending = self.pending, None
        model = self.adapter.text_model
        ours = layout is not None or self.owns_cache(cache)
        if not ours:
            return original(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                use_cache=use_cache,
                **{CACHE: cache},
                **kwargs,
            )
        for name in _UNSUPPORTED_OUTPUTS:
            if kwargs.get(name):
                raise ValueError(f"{name}=True is not available on a compressed model; call handle.remove() first")
        embeds = inputs_embeds if inputs_embeds is not None else model.embed_tokens(input_ids)
        if layout is None:
            return decoder.decode(model, getattr(cache, BOOK)[1], embeds, position_ids, cache)
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError("a compressed prefill needs an empty cache; pass no cache for a new prompt")
        use_cache = model.config.use_cache if use_cache is None else use_cache
        mask = (
            attention_mask
            if attention_mask is not None
            else torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        )
        out, book = decoder.prefill(model, self.plan, layout, self.record, embeds, mask, position_ids, cache, use_cache)
        if book is not None:  # the cache carries its own book, so any pruned cache of this model can be continued
            object.__setattr__(cache_of(out), BOOK, (self, book))
        return out

    def owns_cache(self, cache) -> bool:
        """Whether ``cache`` holds a pruned prefill of this runtime (so decoding must go through its loop)."""
        return getattr(cache, BOOK, (None,))[0] is self

    def report(self) -> dict:
        return self.record.report()
