"""Peak activation memory of one forward, on CPU as on CUDA.

CUDA keeps its own books (``torch.cuda.max_memory_allocated``). On CPU nothing does, so ``LiveBytes`` watches
every tensor operation: each output whose storage is new (not an input's, not already counted) adds its bytes
when created, and ``weakref.finalize`` on the storage subtracts them when the storage is freed. The peak is taken
over live bytes *above the start*: weights, inputs and anything alive before the block are excluded, so the
figure is what the forward itself needs (activations, KV cache, logits). Buffers that fused kernels allocate
and free inside one call (e.g. SDPA's workspace) are not seen.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storages(values) -> list[torch.UntypedStorage]:
    flat, _ = tree_flatten(values)
    return [t.untyped_storage() for t in flat if isinstance(t, torch.Tensor) and t.device.type != "meta"]


class LiveBytes(TorchDispatchMode):
    """Inside ``with LiveBytes() as live:``, ``live.peak`` is the most bytes of new tensor storage alive at once."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: set[int] = set()  # data pointers of the storages counted and still alive

    def _release(self, key: int, size: int) -> None:
        self._live.discard(key)
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {s.data_ptr() for s in _storages((args, kwargs))}
        for storage in _storages(out):
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in inputs or key in self._live:
                continue  # a view or in-place result of something already counted (or of a weight)
            self._live.add(key)
            self.current += size
            weakref.finalize(storage, self._release, key, size)
        self.peak = max(self.peak, self.current)
        return out


def peak_bytes(run: Callable[[], Any], device: torch.device) -> tuple[int, Any]:
    """(peak bytes allocated above the start while ``run()`` ran, its result); weights excluded, see above."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = run()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start), result
    with LiveBytes() as live:
        result = run()
    return int(live.peak), result
