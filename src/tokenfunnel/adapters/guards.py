"""Guards shared by the family adapters."""

from __future__ import annotations


def refuse_labels(original, *args, **kwargs):
    """The head model's forward: labels align with input_ids, but a compressed forward drops visual outputs."""
    if kwargs.get("labels") is not None:
        raise ValueError(
            "labels cannot be scored on a compressed model: pruned tokens have no output; call handle.remove() first"
        )
    return original(*args, **kwargs)
