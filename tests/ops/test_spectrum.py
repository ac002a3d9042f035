import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.spectrum import highfreq_score, lowpass

FAST = settings(max_examples=50, deadline=None)


@st.composite
def token_sets(draw):
    """Random float64 tokens (B, H*W, C) with their grid, or no grid for the 1D path."""
    b, h, w, c = (draw(st.integers(lo, hi)) for lo, hi in ((1, 3), (1, 7), (1, 7), (1, 5)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(b, h * w, c, generator=g, dtype=torch.float64)
    grid = draw(st.sampled_from([(h, w), None]))
    return x, grid


cutoffs = st.floats(0.05, 1.0)
axes = st.sampled_from(["token", "channel"])


@FAST
@given(token_sets(), cutoffs, axes)
def test_scores_are_finite_non_negative_and_shaped(tokens, cutoff, axis):
    x, grid = tokens
    x[:, 0] = 0.0  # a zero token must not divide by zero
    s = highfreq_score(x, cutoff, grid, axis)
    assert s.shape == x.shape[:2] and torch.isfinite(s).all() and (s >= 0).all()
    assert lowpass(x, cutoff, grid, axis).shape == x.shape


@FAST
@given(token_sets(), cutoffs, st.floats(-3, 3))
def test_constant_tokens_score_zero(tokens, cutoff, value):
    x, grid = tokens
    const = torch.randn(x.shape[2], dtype=torch.float64) + value
    x = const.expand_as(x).clone()
    torch.testing.assert_close(
        highfreq_score(x, cutoff, grid), torch.zeros(x.shape[:2], dtype=x.dtype), atol=1e-6, rtol=0
    )


@FAST
@given(token_sets(), axes)
def test_full_cutoff_keeps_everything(tokens, axis):
    x, grid = tokens
    torch.testing.assert_close(lowpass(x, 1.0, grid, axis), x)
    assert highfreq_score(x, 1.0, grid, axis).max() < 1e-6


@FAST
@given(st.integers(3, 8), st.integers(3, 8), st.floats(0.05, 0.6), st.data())
def test_an_outlier_token_on_a_smooth_grid_scores_highest(h, w, cutoff, data):
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    x = torch.zeros(h, w, 4, dtype=torch.float64)
    x[..., 0] = 1.0
    x[..., 1] = 0.1 * torch.cos(torch.pi * rows / h)  # a slow gradient, mostly low frequency
    x = x.reshape(1, h * w, 4)
    spike = data.draw(st.integers(0, h * w - 1))
    x[0, spike] = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)  # same norm, new direction
    grid = data.draw(st.sampled_from([(h, w), None]))
    assert highfreq_score(x, cutoff, grid)[0].argmax().item() == spike


@FAST
@given(token_sets(), cutoffs, axes)
def test_batch_elements_are_scored_independently(tokens, cutoff, axis):
    x, grid = tokens
    s = highfreq_score(x, cutoff, grid, axis)
    for b in range(x.shape[0]):
        torch.testing.assert_close(highfreq_score(x[b : b + 1], cutoff, grid, axis)[0], s[b])


@FAST
@given(st.integers(1, 7), st.integers(1, 7), cutoffs, st.integers(0, 2**31 - 1))
def test_2d_filter_is_the_1d_filter_along_each_axis(h, w, cutoff, seed):
    # the 2D mask is a product of per-axis masks, so filtering columns then rows must agree
    x = torch.randn(2, h, w, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    along_w = lowpass(x.reshape(2 * h, w, 3), cutoff).reshape(2, h, w, 3)
    along_h = lowpass(along_w.transpose(1, 2).reshape(2 * w, h, 3), cutoff).reshape(2, w, h, 3).transpose(1, 2)
    torch.testing.assert_close(lowpass(x.reshape(2, h * w, 3), cutoff, grid=(h, w)), along_h.reshape(2, h * w, 3))


def test_channel_axis_filters_along_features():
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = lowpass(x.transpose(1, 2), 0.5).transpose(1, 2)
    torch.testing.assert_close(lowpass(x, 0.5, axis="channel"), ref)


def test_low_precision_input_keeps_its_dtype():
    x = torch.randn(1, 16, 4).to(torch.bfloat16)
    assert lowpass(x, 0.5, grid=(4, 4)).dtype == torch.bfloat16
    assert torch.isfinite(highfreq_score(x, 0.5, grid=(4, 4))).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cutoff": 0.0}, "cutoff"),
        ({"cutoff": 1.5}, "cutoff"),
        ({"cutoff": 0.5, "grid": (3, 3)}, "grid"),
        ({"cutoff": 0.5, "grid": (0, 16)}, "grid"),
        ({"cutoff": 0.5, "axis": "time"}, "axis"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        highfreq_score(torch.zeros(1, 16, 2), **kwargs)
