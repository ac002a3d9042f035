"""Where the question sits in a LLaVA-style prompt: the text after the last image run, up to the end of the user's
turn. Chat templates put the question after the image and close the turn with the language model's end-of-turn
token (its eos: SmolLM2's and Qwen's ``<|im_end|>``, Llama 3's ``<|eot_id|>``), so the system prompt and the
assistant header stay out; a prompt with no end-of-turn token gives everything after the image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def special_ids(config) -> tuple[set[int], set[int]]:
    """(end-of-turn ids, other ids never part of a question) from a text model's config."""

    def ids(value) -> set[int]:
        if value is None:
            return set()
        return {int(v) for v in value} if isinstance(value, (list, tuple)) else {int(value)}

    ends = ids(getattr(config, "eos_token_id", None))
    return ends, ids(getattr(config, "bos_token_id", None)) | ids(getattr(config, "pad_token_id", None))


def question_span(ids: Tensor, mask: Tensor, visual: Tensor, ends: set[int], skip: set[int]) -> Tensor:
    """Indices (q,) into one sample's ``ids`` (T,) of its question tokens; ``mask`` (T,) 0 at padding, ``visual``
    (T,) True at placeholders. Raises when there are none."""
    if not bool(visual.any()):
        raise ValueError("the prompt holds no image; a question-aware method needs one")
    start = int(visual.nonzero()[-1, 0]) + 1
    after = torch.arange(start, ids.shape[0], device=ids.device)
    stop = torch.tensor(sorted(ends), dtype=ids.dtype, device=ids.device)
    closing = torch.isin(ids[after], stop).nonzero()
    if len(closing):
        after = after[: int(closing[0, 0])]
    plain = mask[after].bool() & ~torch.isin(ids[after], torch.tensor(sorted(skip), dtype=ids.dtype, device=ids.device))
    span = after[plain]
    if span.numel() == 0:
        raise ValueError(
            "the prompt holds no question text after its last image (up to the end of the user's turn); put the "
            "question after the image, as the model's processor does"
        )
    return span
