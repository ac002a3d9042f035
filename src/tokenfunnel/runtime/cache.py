"""The name transformers gives the KV cache in forward calls and outputs: ``past_key_values`` up to 5.23, ``cache``
from 5.24 on (where the old name still works, with a deprecation warning, as a keyword but not as a parameter name).

A patched forward that lists ``past_key_values=None`` in its signature never sees the cache a 5.24 ``generate()``
passes as ``cache=``: it lands in ``**kwargs`` and the patch takes the call for a fresh prompt. So every patched
forward takes the cache through ``pop_cache`` and passes it on under ``CACHE``, whichever version is installed."""

from __future__ import annotations

import inspect

from transformers import LlamaModel

CACHE = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def pop_cache(kwargs: dict):
    """The cache in a forward's ``kwargs`` under either name (removed from them), or None."""
    old, new = kwargs.pop("past_key_values", None), kwargs.pop("cache", None)
    if old is not None and new is not None:
        raise ValueError("pass the KV cache once, as `cache` (transformers >= 5.24) or `past_key_values`")
    return new if new is not None else old


def cache_of(output):
    """The KV cache an output of the installed transformers carries."""
    return getattr(output, CACHE)
