"""The patched forward of the families whose prompt holds a run of placeholders per image (LLaVA, Idefics3/SmolVLM,
InternVL). Text-only calls and decoding steps pass through untouched; a prefill with images runs the encoder (unless
``generate()`` already has) and hands the model a prompt whose runs are shrunk to the tokens the encoder kept."""

from __future__ import annotations

from collections.abc import Callable

from tokenfunnel.adapters import placeholders
from tokenfunnel.runtime.cache import CACHE, pop_cache


def placeholder_forward(
    rt,
    original,
    *,
    model: str,
    placeholder: str,
    encode: Callable[[], object],
    input_ids=None,
    attention_mask=None,
    position_ids=None,
    inputs_embeds=None,
    pixel_values=None,
    mm_encoder_outputs=None,
    check: Callable[[], None] | None = None,
    text_only: dict | None = None,
    **call,
):
    """``original`` (the model's own forward) on the shrunk prompt. ``encode()`` runs the vision side on the pixels;
    ``check()`` refuses what this family cannot compress, once the call is known to carry images; ``text_only`` holds
    arguments only the pass-through call takes; ``call`` goes to the model either way (the KV cache under the name
    the installed transformers gives it)."""
    call[CACHE] = pop_cache(call)
    encoded = mm_encoder_outputs.get("image") if isinstance(mm_encoder_outputs, dict) else mm_encoder_outputs
    if pixel_values is None and encoded is None:  # text only, or decoding after the prefill
        return original(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            mm_encoder_outputs=mm_encoder_outputs,
            **(text_only or {}),
            **call,
        )
    if pixel_values is not None and encoded is not None:
        raise ValueError("pass pixel_values or mm_encoder_outputs, not both")
    if input_ids is None:
        raise ValueError(
            f"a compressed {model} needs input_ids (to find the {placeholder} placeholders), not inputs_embeds"
        )
    if check is not None:
        check()
    if encoded is None:  # generate() encodes images before the prefill and hands them over as mm_encoder_outputs
        encoded = encode()
    run = placeholders.run_of(encoded)
    return placeholders.call_shrunk(
        rt, original, run, input_ids, attention_mask, position_ids, encoded, inputs_embeds=inputs_embeds, **call
    )
