"""Per-instance patching that records every change and undoes it exactly (PEFT's apply-and-undo manner).

Only instance attributes are set (``module.forward = ...`` shadows the class method for this object alone), so
another model of the same class in the process is never touched; removing the attribute restores the class
method, and attributes that existed before are put back as they were.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

MARK = "_tokenfunnel_handle"
_MISSING = object()


class Patcher:
    """Sets attributes on objects and remembers how to undo each, in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[object, str, Any]] = []

    def set(self, obj: object, name: str, value: Any) -> None:
        self._undo.append((obj, name, obj.__dict__.get(name, _MISSING)))
        setattr(obj, name, value)

    def forward(self, module: object, fn: Callable) -> Callable:
        """Replace ``module.forward`` with ``fn(original, *args, **kwargs)``; returns the original bound forward."""
        original = module.forward

        def patched(_self, *args, **kwargs):
            return fn(original, *args, **kwargs)

        # keep the signature visible: generate() inspects forward's parameters (position_ids, mm_encoder_outputs)
        functools.update_wrapper(patched, getattr(original, "__func__", original))
        self.set(module, "forward", types.MethodType(patched, module))
        return original

    def undo(self) -> None:
        while self._undo:
            obj, name, old = self._undo.pop()
            if old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
