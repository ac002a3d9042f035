import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.budget import SHAPES, cascade, grid_target

FAST = settings(max_examples=200, deadline=None)


@st.composite
def cascades(draw, shapes=SHAPES):
    """Arguments of a cascade whose mean lies in the documented reachable range [n*start, n*(start+ramp)] / layers."""
    n = draw(st.integers(0, 100))
    layers = draw(st.integers(1, 40))
    start = draw(st.integers(0, layers - 1))
    final_zero = draw(st.booleans())
    ramp = layers - start - (1 if final_zero else 0)
    low, high = n * start, n * (start + ramp)
    mean = (low + draw(st.floats(0, 1)) * (high - low)) / layers
    return n, layers, mean, draw(st.sampled_from(shapes)), start, final_zero


@FAST
@given(cascades())
def test_cascade_is_a_falling_schedule_within_bounds(args):
    n, layers, mean, shape, start, final_zero = args
    counts = cascade(n, layers, mean, shape, start, final_zero)
    assert len(counts) == layers
    assert all(0 <= c <= n for c in counts)
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)), counts
    assert counts[:start] == [n] * start
    if final_zero:
        assert counts[-1] == 0


# the docstring promises any mean in range is reachable for every shape; this is the FLOP budget `keep` relies on
@pytest.mark.parametrize("shape", SHAPES)
def test_cascade_hits_the_requested_total_for_every_shape(shape):
    @FAST
    @given(cascades(shapes=(shape,)))
    def check(args):
        n, layers, mean, shape, start, final_zero = args
        counts = cascade(n, layers, mean, shape, start, final_zero)
        assert sum(counts) == round(mean * layers), (counts, mean * layers)

    check()


def test_a_flat_cascade_drops_once_and_holds():
    assert cascade(256, 30, 64, "flat", final_zero=False) == [64] * 30
    counts = cascade(256, 30, 64, "flat")  # the last layer's share moves to the others
    assert counts[-1] == 0 and set(counts[:-1]) == {66, 67} and sum(counts) == 64 * 30


def test_cascade_low_budget_with_a_steep_shape_is_reached_or_refused():
    # 64 tokens over 6 layers at keep 0.1: 38.4 token-layers; "step" returns [64, 64, 0, 0, 0, 0] (128) silently
    for shape in SHAPES:
        try:
            counts = cascade(64, 6, 6.4, shape)
        except ValueError:
            continue
        assert sum(counts) == 38, (shape, counts)


@FAST
@given(cascades(), st.sampled_from(["below", "above"]), st.floats(0.01, 50))
def test_cascade_rejects_a_mean_out_of_reach(args, side, by):
    n, layers, _, shape, start, final_zero = args
    ramp = layers - start - (1 if final_zero else 0)
    low, high = n * start / layers, n * (start + ramp) / layers
    mean = low - by if side == "below" else high + by
    with pytest.raises(ValueError, match="out of reach"):
        cascade(n, layers, mean, shape, start, final_zero)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=8, layers=4, mean=2, shape="cubic"), "shape"),
        (dict(n=8, layers=0, mean=0), "layers"),
        (dict(n=-1, layers=4, mean=0), "n >= 0"),
        (dict(n=8, layers=4, mean=2, start=4), "start layer"),
    ],
)
def test_cascade_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cascade(**kwargs)


@FAST
@given(st.integers(1, 64), st.integers(1, 64), st.floats(0.001, 1.0))
def test_grid_target_stays_on_the_grid_and_covers_the_fraction(h, w, fraction):
    th, tw = grid_target(h, w, fraction)
    assert 1 <= th <= h and 1 <= tw <= w
    # at least the requested cells, and less than one extra column (or, when the width is used up, row) beyond them
    assert th * tw >= fraction * h * w * (1 - 1e-9)
    assert th * tw < fraction * h * w + max(th, tw)


@given(st.integers(1, 64), st.integers(1, 64))
def test_grid_target_of_one_is_the_grid(h, w):
    assert grid_target(h, w, 1.0) == (h, w)


@pytest.mark.parametrize("fraction", [0, -0.5, 1.01])
def test_grid_target_rejects_fractions_outside_zero_one(fraction):
    with pytest.raises(ValueError, match="grid fraction"):
        grid_target(8, 8, fraction)


@FAST
@given(cascades(), st.integers(2, 6))
def test_a_held_cascade_prunes_rarely_and_still_hits_the_total(args, every):
    n, layers, mean, shape, start, final_zero = args
    counts = cascade(n, layers, mean, shape, start, final_zero, every=every)
    assert sum(counts) == round(mean * layers)
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)), counts
    drops = sum(a != b for a, b in zip(counts, counts[1:], strict=False))
    ramp = layers - start - (1 if final_zero else 0)
    # one drop per held block, one for the rounding top-up, one into the final zero
    assert drops <= -(-ramp // every) + 2, counts
