"""The patch grid the LLaVA adapter assumes before any image is seen, for each tower."""

from __future__ import annotations

import pytest

from tiny import GRID, build
from tokenfunnel.adapters.llava import LlavaAdapter


@pytest.mark.parametrize("tower", ["clip", "siglip", "dinov2"])
def test_a_tower_fed_its_configured_size_gives_that_grid(tower):
    model = build(tower, strategy="full" if tower == "siglip" else "default")  # SigLIP has no class token to drop
    assert LlavaAdapter(model).nominal_grid() == GRID


def test_a_dinov2_tower_takes_its_grid_from_the_llava_config():
    model = build("dinov2")
    model.config.image_seq_length = 16 * 16  # what the bundled VLM states: 224 px through a 518 px position table
    assert LlavaAdapter(model).nominal_grid() == (16, 16)


def test_a_clip_tower_is_fed_its_image_size_whatever_the_llava_config_says():
    model = build("clip")
    model.config.image_seq_length = 16 * 16
    assert LlavaAdapter(model).nominal_grid() == GRID
