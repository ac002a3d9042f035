"""Data parallelism for accuracy under ``torchrun``: each rank scores its share of the questions, rank 0 merges.

Started plainly (no ``WORLD_SIZE`` above 1 in the environment) everything runs in one process through the same
calls. The process group uses gloo on CPU and nccl on CUDA (one GPU per rank, ``LOCAL_RANK``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Group:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def joined(self) -> bool:
        return self.world > 1

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.joined:
            return [value]
        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (so all ranks take the same decisions, e.g. what is left to do)."""
        if not self.joined:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def leave(self) -> None:
        if self.joined and dist.is_initialized():
            dist.destroy_process_group()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def device_for(requested: str) -> torch.device:
    """``auto`` is this rank's GPU when there is one, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(requested)


def join(device: torch.device) -> Group:
    """The process group of a ``torchrun`` launch (a one-process group otherwise). The timeout is long: ranks
    other than 0 wait while rank 0 merges and writes."""
    if world_size() <= 1:
        return Group()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(hours=2))
    return Group(dist.get_rank(), dist.get_world_size())
