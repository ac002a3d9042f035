import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.merge import (
    column_similarity,
    grid_schedule,
    initial_spans,
    merge_columns,
    merge_rows,
    pick_pairs,
    proportional_bias,
)

FAST = settings(max_examples=50, deadline=None)


@st.composite
def grids(draw, min_side=2, max_side=8):
    """A float64 grid with random positive sizes (as if earlier merges had happened) and a seed-stable generator."""
    b = draw(st.integers(1, 3))
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    c = draw(st.integers(1, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(b, h, w, c, generator=g, dtype=torch.float64)
    size = torch.randint(1, 5, (b, h, w), generator=g).double()
    return x, size


@st.composite
def merge_plans(draw):
    """An unmerged grid with unit sizes and a sequence of alternating column/row merges that stays valid."""
    x, _ = draw(grids())
    size = torch.ones(x.shape[:3], dtype=torch.float64)
    h, w = x.shape[1:3]
    plan = []
    for i in range(draw(st.integers(1, 4))):
        axis = "cols" if i % 2 == 0 else "rows"
        n = w if axis == "cols" else h
        r = draw(st.integers(0, n // 2))
        plan.append((axis, r))
        w, h = (w - r, h) if axis == "cols" else (w, h - r)
    return x, size, plan


def run_plan(x, size, plan):
    b, h, w = size.shape
    rows, cols = initial_spans(b, h), initial_spans(b, w)
    for axis, r in plan:
        if axis == "cols":
            x, size, info = merge_columns(x, size, r)
            cols = info.spans(cols)
        else:
            x, size, info = merge_rows(x, size, r)
            rows = info.spans(rows)
    return x, size, rows, cols


@FAST
@given(grids(), st.data())
def test_columns_shrink_by_r_and_sizes_are_conserved(grid, data):
    x, size = grid
    r = data.draw(st.integers(0, x.shape[2] // 2))
    y, s, info = merge_columns(x, size, r)
    assert y.shape == (x.shape[0], x.shape[1], x.shape[2] - r, x.shape[3])
    assert s.shape == y.shape[:3]
    torch.testing.assert_close(s.sum((1, 2)), size.sum((1, 2)))
    assert info.first.shape == info.last.shape == (x.shape[0], x.shape[2] - r)


@FAST
@given(merge_plans())
def test_each_token_is_the_mean_of_the_original_patches_it_covers(plan_case):
    x0, size0, plan = plan_case
    x, size, rows, cols = run_plan(x0, size0, plan)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            r0, r1 = rows[b, i].tolist()
            for j in range(x.shape[2]):
                c0, c1 = cols[b, j].tolist()
                patch = x0[b, r0 : r1 + 1, c0 : c1 + 1]
                torch.testing.assert_close(x[b, i, j], patch.mean((0, 1)))
                assert size[b, i, j].item() == (r1 - r0 + 1) * (c1 - c0 + 1)
    assert size.sum().item() == size0.sum().item()


@FAST
@given(merge_plans())
def test_spans_are_contiguous_ordered_and_cover_the_axis_once(plan_case):
    x0, size0, plan = plan_case
    _, _, rows, cols = run_plan(x0, size0, plan)
    for spans, n0 in ((rows, x0.shape[1]), (cols, x0.shape[2])):
        assert (spans[:, 0, 0] == 0).all() and (spans[:, -1, 1] == n0 - 1).all()
        assert (spans[..., 1] >= spans[..., 0]).all()
        assert (spans[:, 1:, 0] == spans[:, :-1, 1] + 1).all()  # next starts right after previous ends


@FAST
@given(grids(), st.data())
def test_r_zero_is_bit_identical(grid, data):
    x, size = grid
    merge = data.draw(st.sampled_from([merge_columns, merge_rows]))
    y, s, _ = merge(x, size, 0)
    assert torch.equal(y, x) and torch.equal(s, size)


@FAST
@given(grids(), st.data())
def test_unmerged_tokens_are_bit_identical(grid, data):
    x, size = grid
    y, _, info = merge_columns(x, size, data.draw(st.integers(0, x.shape[2] // 2)))
    single = info.first == info.last
    for b in range(x.shape[0]):
        assert torch.equal(y[b][:, single[b]], x[b][:, info.first[b][single[b]]])


@FAST
@given(grids(), st.data())
def test_batch_elements_are_merged_independently(grid, data):
    x, size = grid
    merge = data.draw(st.sampled_from([merge_columns, merge_rows]))
    n = x.shape[2] if merge is merge_columns else x.shape[1]
    r = data.draw(st.integers(0, n // 2))
    y, s, _ = merge(x, size, r)
    for b in range(x.shape[0]):
        yb, sb, _ = merge(x[b : b + 1], size[b : b + 1], r)
        assert torch.equal(yb[0], y[b]) and torch.equal(sb[0], s[b])


@FAST
@given(grids())
def test_merge_rows_is_merge_columns_on_the_transpose(grid):
    x, size = grid
    r = x.shape[1] // 2
    y, s, info = merge_rows(x, size, r)
    yt, st_, info_t = merge_columns(x.transpose(1, 2), size.transpose(1, 2), r)
    assert torch.equal(y, yt.transpose(1, 2)) and torch.equal(s, st_.transpose(1, 2))
    assert torch.equal(info.first, info_t.first) and info.dim == 1
    # the replayed merge reproduces the outputs on any per-token tensor
    assert torch.equal(info.mean(x, size), y) and torch.equal(info.add(size), s)


@FAST
@given(st.integers(1, 3), st.integers(2, 12), st.integers(0, 2**31 - 1), st.data())
def test_pairs_are_disjoint_exactly_r_and_greedy(b, w, seed, data):
    sim = torch.rand(b, w - 1, generator=torch.Generator().manual_seed(seed))
    r = data.draw(st.integers(0, w // 2))
    pairs = pick_pairs(sim, r)
    assert pairs.shape == (b, w - 1) and (pairs.sum(1) == r).all()
    assert not (pairs[:, 1:] & pairs[:, :-1]).any()  # no column used twice
    if r > 0 and r <= (w + 1) // 3:  # the guard never binds this early, so the best pair is always taken
        assert pairs.gather(1, sim.argmax(1, keepdim=True)).all()


def greedy_reference(scores, r):
    """Plain-Python version of the documented rule, one sample at a time."""

    def capacity(free):
        runs = "".join("1" if f else "0" for f in free).split("0")
        return sum(len(run) // 2 for run in runs)

    free, chosen = [True] * (len(scores) + 1), [False] * len(scores)
    for j in sorted(range(len(scores)), key=lambda j: (-scores[j], j)):
        if sum(chosen) < r and free[j] and free[j + 1]:
            trial = free[:j] + [False, False] + free[j + 2 :]
            if capacity(trial) >= r - sum(chosen) - 1:
                free, chosen[j] = trial, True
    return chosen


@FAST
@given(st.integers(1, 3), st.integers(2, 12), st.integers(0, 2**31 - 1), st.data())
def test_pairs_follow_the_greedy_rule(b, w, seed, data):
    # coarse scores so that ties (broken by lower index) actually happen
    sim = torch.randint(0, 4, (b, w - 1), generator=torch.Generator().manual_seed(seed)).double()
    r = data.draw(st.integers(0, w // 2))
    pairs = pick_pairs(sim, r)
    for row in range(b):
        assert pairs[row].tolist() == greedy_reference(sim[row].tolist(), r)


def test_identical_columns_are_merged_first():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    x[0, :, 3] = x[0, :, 2]
    x[1, :, 1] = x[1, :, 0] * 3.0  # cosine ignores scale
    y, s, info = merge_columns(x, torch.ones(2, 3, 5, dtype=torch.float64), 1)
    assert info.first.tolist() == [[0, 1, 2, 4], [0, 2, 3, 4]]
    assert s[0, :, 2].eq(2).all() and s[1, :, 0].eq(2).all()
    torch.testing.assert_close(y[1, :, 0], x[1, :, 0] * 2.0)


def test_greedy_keeps_enough_room_for_r_pairs():
    # the best pair (1, 2) would block both others, but r=2 in 4 columns needs pairs (0, 1) and (2, 3)
    pairs = pick_pairs(torch.tensor([[0.5, 0.9, 0.4]]), 2)
    assert pairs.tolist() == [[True, False, True]]


def test_column_similarity_matches_definition():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    sim = column_similarity(x)
    ref = torch.nn.functional.cosine_similarity(x[:, :, :-1], x[:, :, 1:], dim=-1).mean(1)
    torch.testing.assert_close(sim, ref)
    metric = torch.randn(2, 3, 4, 2, generator=g, dtype=torch.float64)
    assert not torch.allclose(column_similarity(x, metric), sim)


@pytest.mark.parametrize("r, w", [(-1, 4), (3, 4), (4, 4), (1, 1)])
def test_invalid_r_is_rejected(r, w):
    x = torch.zeros(1, 2, w, 3)
    with pytest.raises(ValueError, match="use 0 <= r"):
        merge_columns(x, torch.ones(1, 2, w), r)


def test_merge_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="size"):
        merge_columns(torch.zeros(1, 2, 4, 3), torch.ones(1, 2, 3), 1)


@FAST
@given(st.integers(1, 32), st.integers(1, 32), st.data())
def test_schedule_reaches_target_with_at_most_half_per_step(h, w, data):
    th, tw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    steps = data.draw(st.integers(0, 12))
    try:
        schedule = grid_schedule(h, w, th, tw, steps)
    except ValueError:
        # only impossible: the axis needs more halvings than it gets steps
        n_cols, n_rows = (steps + 1) // 2, steps // 2
        assert -(-w // 2**n_cols) > tw or -(-h // 2**n_rows) > th
        return
    assert len(schedule) == steps
    assert [a for a, _ in schedule] == ["cols" if i % 2 == 0 else "rows" for i in range(steps)]
    cur = {"cols": w, "rows": h}
    for axis, r in schedule:
        assert 0 <= r <= cur[axis] // 2
        cur[axis] -= r
    assert (cur["rows"], cur["cols"]) == (th, tw)


def test_schedule_is_even_when_it_can_be():
    assert grid_schedule(24, 24, 12, 12, 4) == [("cols", 6), ("rows", 6), ("cols", 6), ("rows", 6)]
    assert grid_schedule(24, 24, 3, 3, 6) == [("cols", 12), ("rows", 12), ("cols", 6), ("rows", 6)] + [
        ("cols", 3),
        ("rows", 3),
    ]


@pytest.mark.parametrize(
    "args, match",
    [((4, 4, 0, 2, 2), "target height"), ((4, 4, 2, 5, 2), "target width"), ((16, 16, 1, 1, 2), "more steps")],
)
def test_schedule_rejects_impossible_targets(args, match):
    with pytest.raises(ValueError, match=match):
        grid_schedule(*args)


def test_proportional_bias_is_log_size_flattened():
    size = torch.tensor([[[1.0, 2.0], [4.0, 1.0]]])
    torch.testing.assert_close(proportional_bias(size), torch.log(size).reshape(1, 4))
