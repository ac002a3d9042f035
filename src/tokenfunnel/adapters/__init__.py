"""One adapter per model family: where the encoder layers are and where visual tokens sit in the LLM sequence."""

from __future__ import annotations

import importlib

from tokenfunnel.adapters.versions import check_transformers

# family modules; each defines CLASSES (model class names it serves) and ADAPTER (the adapter class)
MODULES = ("llava", "idefics3", "internvl", "qwen2_vl")


def _families() -> dict:
    table = {}
    for name in MODULES:
        module = importlib.import_module(f"tokenfunnel.adapters.{name}")
        table.update(dict.fromkeys(module.CLASSES, module.ADAPTER))
    return table


def adapter_for(model):
    """The adapter for ``model``'s family, or a clear error listing the supported model classes."""
    families = _families()
    name = type(model).__name__
    if name not in families:
        raise TypeError(f"{name} is not a supported VLM; supported model classes: {', '.join(sorted(families))}")
    check_transformers()
    return families[name](model)
