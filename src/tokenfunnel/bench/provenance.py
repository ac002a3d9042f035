"""Where and with what the numbers were measured: they mean little without it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import cache
from pathlib import Path

import torch


@cache
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_id(device: str) -> str:
    """One line naming the hardware timings depend on: a sweep resumed elsewhere must not mix its numbers."""
    name = f"{cpu_name()} x{os.cpu_count()}"
    if device.startswith("cuda"):
        name += f" + {torch.cuda.get_device_name(torch.device(device))}"
    return name


def machine(device: str, threads: int) -> dict:
    return {
        "id": machine_id(device),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": device,
    }


def versions() -> dict:
    import transformers

    import tokenfunnel

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenfunnel": tokenfunnel.__version__,
    }


def commit() -> str | None:
    """The git commit of the tokenfunnel checkout that ran, ``+dirty`` when it had uncommitted changes."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")
