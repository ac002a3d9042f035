import math

import pytest
import torch
from torch import nn

from tokenfunnel import LUVCConfig
from tokenfunnel.methods.luvc import LUVC
from tokenfunnel.runtime.state import ScoreInput

D = 16


def smooth_grid(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(b, h*w, D) tokens that vary along columns with one period-w cosine: low-pass on a grid and in raster order."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, 1, 1, D, generator=g) + 3
    wave = torch.cos(2 * math.pi * torch.arange(w) / w)[None, None, :, None] * torch.randn(b, 1, 1, D, generator=g)
    return (base + 0.5 * wave).expand(b, h, w, D).reshape(b, h * w, D).clone()


def add_outlier(x: torch.Tensor, row: int, i: int) -> None:
    """Push token i of sample ``row`` off the smooth pattern by half its norm, in a random direction.

    Scores are energy shares, so a huge outlier's ringing makes its small neighbours score higher than itself;
    a moderate one (the case a pruner must catch) is the top score.
    """
    d = torch.randn(D, generator=torch.Generator().manual_seed(row + i))
    x[row, i] += 0.5 * x[row, i].norm() * d / d.norm()


def score(x, cells=None, images=((8, 8),), layer=None, count=None, **options) -> torch.Tensor:
    b, n, _ = x.shape
    cells = torch.arange(n).expand(b, n) if cells is None else cells
    layer = layer if layer is not None else nn.Identity()
    inputs = ScoreInput(x, cells, list(images), layer, 0, count=count)
    return LUVC(LUVCConfig(**options)).score(inputs)


@pytest.mark.parametrize("spectrum", ["2d", "1d"])
def test_a_constant_grid_scores_zero_everywhere(spectrum):
    x = torch.randn(D).expand(2, 64, D).clone()
    s = score(x, spectrum=spectrum)
    assert s.shape == (2, 64) and torch.isfinite(s).all()
    assert s.abs().max() < 1e-6


def test_channel_scores_of_identical_tokens_are_finite_and_equal():
    x = torch.randn(D).expand(2, 64, D).clone()
    s = score(x, spectrum="channel")
    assert torch.isfinite(s).all() and torch.allclose(s, s[:, :1].expand_as(s))


def test_zero_tokens_score_finite():
    s = score(torch.zeros(1, 64, D))
    assert torch.isfinite(s).all()


@pytest.mark.parametrize("spectrum", ["2d", "1d"])
def test_an_outlier_on_a_smooth_grid_scores_highest(spectrum):
    x = smooth_grid(2, 8, 8)
    where = [27, 50]  # a different token per sample
    for row, i in enumerate(where):
        add_outlier(x, row, i)
    s = score(x, spectrum=spectrum)
    assert s.argmax(1).tolist() == where
    assert score(x, spectrum=spectrum, prefer="low").argmin(1).tolist() == where


def test_the_smooth_part_itself_scores_near_zero():
    s = score(smooth_grid(2, 8, 8))
    assert s.abs().max() < 1e-6


def test_a_token_with_high_frequency_channels_scores_highest_on_the_channel_spectrum():
    x = torch.ones(1, 64, D) * torch.rand(1, 64, 1)  # every token flat across its channels
    x[0, 13] = torch.tensor([1.0, -1.0] * (D // 2))
    assert score(x, spectrum="channel").argmax(1).tolist() == [13]


def test_pruned_cells_are_filled_and_the_outlier_still_wins():
    x = smooth_grid(1, 8, 8)
    add_outlier(x, 0, 44)
    cells = torch.tensor([[i for i in range(64) if i % 3 != 1]])  # 2/3 of the grid survives, cell 44 among them
    s = score(x[:, cells[0]], cells=cells)
    assert torch.isfinite(s).all()
    assert cells[0, s.argmax(1)].tolist() == [44]


def test_each_image_of_a_sample_is_scored_on_its_own_grid():
    # two images, 8x8 then 4x4: the outlier sits in the second; the first image's wave must not leak into it
    x = torch.cat([smooth_grid(1, 8, 8, seed=1), smooth_grid(1, 4, 4, seed=2)], dim=1)
    add_outlier(x, 0, 64 + 6)
    s = score(x, images=((8, 8), (4, 4)), spectrum="2d")
    assert s.argmax(1).tolist() == [70]
    assert s[0, :64].abs().max() < 1e-6


def test_normed_scores_read_the_layers_input_norm():
    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm = nn.LayerNorm(D)

    layer = Layer()
    x = torch.randn(1, 64, D)
    with torch.no_grad():
        normed = score(x, layer=layer)
        by_hand = score(layer.input_layernorm(x), layer=layer, normed=False)
        raw = score(x, layer=layer, normed=False)
    assert torch.equal(normed, by_hand)
    assert not torch.allclose(normed, raw)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(keep=0), "keep"),
        (dict(keep=-0.1), "keep"),
        (dict(keep=1.5), "keep"),
        (dict(grid_keep=0), "grid_keep"),
        (dict(grid_keep=1.2), "grid_keep"),
        (dict(encoder_start=1.0), "encoder_start"),
        (dict(encoder_start=-0.1), "encoder_start"),
        (dict(shape="cubic"), "shape"),
        (dict(spectrum="3d"), "spectrum"),
        (dict(cutoff=0), "cutoff"),
        (dict(cutoff=1.5), "cutoff"),
        (dict(prefer="middle"), "prefer"),
        (dict(start=-1), "start"),
        (dict(contextual=1.0), "contextual"),
        (dict(contextual=-0.1), "contextual"),
        (dict(coverage=1.5), "coverage"),
        (dict(coverage=-0.1), "coverage"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(options, field):
    with pytest.raises(ValueError, match=rf"^{field} must"):
        LUVCConfig(**options)


def test_config_defaults_are_valid_and_frozen():
    config = LUVCConfig()
    with pytest.raises(AttributeError):
        config.keep = 0.5  # type: ignore[misc]


def test_coverage_keeps_one_token_in_every_block_before_any_second_one():
    """Two outliers crowd the top-left block; with coverage=1 the 16 tokens kept are one per 2 x 2 block of the 8 x 8
    grid, each block's best by the plain score, so the second outlier waits; without it both come first."""
    x = smooth_grid(1, 8, 8)
    for i in (0, 9):  # both in block 0 (rows 0-1, columns 0-1)
        add_outlier(x, 0, i)
    plain = score(x, count=16)
    covered = score(x, count=16, coverage=1.0)
    kept = covered.topk(16).indices[0]
    block = (kept // 8 // 2) * 4 + (kept % 8) // 2
    assert sorted(block.tolist()) == list(range(16))
    assert set(plain.topk(2).indices[0].tolist()) == {0, 9}
    assert kept.tolist()[0] in (0, 9) and not {0, 9} <= set(kept.tolist())
    for b in range(16):  # each block's pick is its best by the plain score
        cells = [c for c in range(64) if (c // 8 // 2) * 4 + (c % 8) // 2 == b]
        assert int(kept[block == b]) == max(cells, key=lambda c: float(plain[0, c]))
    assert torch.equal(score(x, count=16, coverage=0.0), plain)
