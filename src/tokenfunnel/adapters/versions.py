"""The oldest transformers the adapters are tested with.

Older versions build these models differently enough that a patched model breaks or no longer reproduces the
untouched one at keep=1.0 (measured with the test suite: on 5.17 and 5.22 the Qwen2-VL, Idefics3 and InternVL
keep-one identity tests fail and the LLaVA path raises inside the vision tower; on 5.23 and later every test
passes). Compressing on such a version could not be undone exactly, so it is refused up front.
"""

from __future__ import annotations

import re

import transformers

OLDEST = (5, 23)


def parse(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "5.23.0" or "5.24.0.dev0"."""
    numbers = re.findall(r"\d+", version)
    if len(numbers) < 2:
        raise ValueError(f"cannot read a transformers version from {version!r}")
    return int(numbers[0]), int(numbers[1])


def check_transformers() -> None:
    """Refuse an installed transformers older than ``OLDEST``."""
    found = transformers.__version__
    if parse(found) < OLDEST:
        need = f"{OLDEST[0]}.{OLDEST[1]}"
        raise RuntimeError(
            f"tokenfunnel needs transformers >= {need} (found {found}): pip install -U 'transformers>={need}'"
        )
