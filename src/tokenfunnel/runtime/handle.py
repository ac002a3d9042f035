"""The handle ``tokenfunnel.compress`` returns: report() on the last forward, remove() to restore the model."""

from __future__ import annotations

from tokenfunnel.adapters import adapter_for
from tokenfunnel.runtime.apply import Runtime
from tokenfunnel.runtime.encoder import final_grid
from tokenfunnel.runtime.patch import MARK
from tokenfunnel.runtime.state import Plan


class Handle:
    """Undoable compression of one model instance; also a context manager that removes itself on exit."""

    def __init__(self, model, plan: Plan, config) -> None:
        if getattr(model, MARK, None) is not None:
            raise RuntimeError("this model is already compressed; call handle.remove() on it before compressing again")
        self.model, self.config = model, config
        self._runtime = Runtime(model, plan, adapter_for(model))
        self._runtime.install()
        self.active = True

    def report(self) -> dict:
        """Token counts of the last forward with an image: encoder_tokens, llm_visual_tokens, keep, encoder_keep, ..."""
        return self._runtime.report()

    def encoder_grid(self, h: int, w: int) -> tuple[int, int]:
        """The grid an h x w patch grid leaves the encoder with: fixed by the schedule, known before any image runs
        (what a serving engine needs to size the prompt)."""
        h, w = self._runtime.input_grid(h, w) or (h, w)
        return final_grid(h, w, self._runtime.encoder_steps(h, w))

    def remove(self) -> None:
        """Restore the model exactly as it was; calling it twice is harmless."""
        if self.active:
            self._runtime.remove()
            self.active = False

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"<tokenfunnel handle {self.config} on {type(self.model).__name__} ({state})>"
