"""Time spent in tokenfunnel's own work (scoring, selecting, merging, shrinking prompts) during a forward.

Benchmarks wrap a forward in ``overhead()`` to learn how much of it was ours; outside such a block ``ours()``
costs one list check, so the runtime can mark its work unconditionally.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_collectors: list[list[float]] = []


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def overhead() -> Iterator[list[float]]:
    """Yields a list that receives the seconds of every piece of tokenfunnel work done inside the block."""
    seconds: list[float] = []
    _collectors.append(seconds)
    try:
        yield seconds
    finally:
        _collectors.remove(seconds)


@contextmanager
def ours() -> Iterator[None]:
    """Marks a piece of tokenfunnel's own work; timed only inside an ``overhead()`` block (nested pieces count once)."""
    if not _collectors or _inside[0]:
        yield
        return
    _sync()
    started = time.perf_counter()
    _inside[0] = True
    try:
        yield
    finally:
        _inside[0] = False
        _sync()
        spent = time.perf_counter() - started
        for seconds in _collectors:
            seconds.append(spent)


_inside = [False]
