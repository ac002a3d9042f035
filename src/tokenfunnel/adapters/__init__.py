"""One adapter per model family: where the encoder layers are and where visual tokens sit in the LLM sequence."""

from __future__ import annotations

from tokenfunnel.adapters import llava

FAMILIES = {name: llava.LlavaAdapter for name in llava.CLASSES}


def adapter_for(model):
    """The adapter for ``model``'s family, or a clear error listing the supported model classes."""
    name = type(model).__name__
    if name not in FAMILIES:
        raise TypeError(f"{name} is not a supported VLM; supported model classes: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name](model)
