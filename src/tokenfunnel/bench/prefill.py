"""Wall time of the language-model part of a prefill, measured around the text model's own forward."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


@contextmanager
def llm_timer(text_model):
    """Yields a list that receives the seconds each forward of ``text_model`` took (synchronised on CUDA)."""
    seconds: list[float] = []
    started: list[float] = []

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def before(_module, _args, _kwargs) -> None:
        sync()
        started.append(time.perf_counter())

    def after(_module, _args, _kwargs, _out) -> None:
        sync()
        seconds.append(time.perf_counter() - started.pop())

    pre = text_model.register_forward_pre_hook(before, with_kwargs=True)
    post = text_model.register_forward_hook(after, with_kwargs=True)
    try:
        yield seconds
    finally:
        pre.remove()
        post.remove()
