import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.relevance import (
    allot,
    check_tiers,
    group_by_relevance,
    regions,
    relevance,
    tier_sizes,
)
from tokenfunnel.ops.setmerge import group_mean

FAST = settings(max_examples=60, deadline=None)
TIERS = ((20, 8), (30, 3), (23, 1))


def test_regions_tile_the_grid_in_raster_order_with_smaller_edge_blocks():
    r = regions(3, 5, (2, 2)).view(3, 5)
    assert r.tolist() == [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]]
    with pytest.raises(ValueError, match="does not fit"):
        regions(2, 2, (3, 1))


@FAST
@given(st.integers(1, 200), st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_tier_sizes_sum_to_the_regions_and_follow_the_shares(count, shares):
    sizes = tier_sizes(count, shares)
    assert sum(sizes) == count
    assert all(abs(s - count * sh / sum(shares)) < 1 for s, sh in zip(sizes, shares, strict=True))


def test_the_design_tiers_give_273_tokens_for_73_regions_of_8_cells():
    take = allot(torch.randn(73), torch.full((73,), 8), TIERS)
    assert int(take.sum()) == 20 * 8 + 30 * 3 + 23 * 1 == 273


@FAST
@given(st.integers(3, 80), st.integers(0, 2**31 - 1))
def test_tiers_go_by_rank_and_more_relevant_regions_never_get_fewer_tokens(count, seed):
    score = torch.randn(count, generator=torch.Generator().manual_seed(seed))
    take = allot(score, torch.full((count,), 8), TIERS)
    ranked = take[score.argsort(descending=True)]
    assert (ranked[:-1] >= ranked[1:]).all()
    assert set(ranked.tolist()) <= {8, 3, 1}


@FAST
@given(st.integers(2, 60), st.integers(0, 2**31 - 1), st.floats(0, 1))
def test_a_total_is_hit_exactly_and_monotone_in_rank(count, seed, where):
    g = torch.Generator().manual_seed(seed)
    score = torch.randn(count, generator=g)
    capacity = torch.full((count,), 8)
    total = count + round(where * (8 * count - count))
    take = allot(score, capacity, TIERS, total)
    assert int(take.sum()) == total and (take >= 1).all() and (take <= capacity).all()
    ranked = take[score.argsort(descending=True)]
    assert (ranked[:-1] >= ranked[1:]).all()


def test_budgets_scale_with_the_input_and_refuse_what_cannot_fit():
    small = allot(torch.randn(32), torch.full((32,), 8), TIERS)
    assert int(small.sum()) == 9 * 8 + 13 * 3 + 10 * 1  # 32 regions: the shares 20:30:23 scaled
    with pytest.raises(ValueError, match="cannot be split"):
        allot(torch.randn(4), torch.full((4,), 8), TIERS, total=3)
    with pytest.raises(ValueError, match="cannot be split"):
        allot(torch.randn(4), torch.full((4,), 8), TIERS, total=33)


@pytest.mark.parametrize(
    "tiers, message",
    [(((10, 3), (10, 8)), "must increase with relevance"), (((10, 3), (10, 3)), "must increase"), ((), "every tier")],
)
def test_bad_tiers_are_refused(tiers, message):
    with pytest.raises(ValueError, match=message):
        check_tiers(tiers)


def test_relevance_is_the_cosine_with_the_best_or_mean_question_token():
    tokens = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    question = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(relevance(tokens, question, "max"), torch.tensor([1.0, 1.0, 2**-0.5]))
    assert torch.allclose(relevance(tokens, question, "mean"), torch.tensor([0.5, 0.5, 2**-0.5]))
    with pytest.raises(ValueError, match="no tokens"):
        relevance(tokens, question[:0])


@FAST
@given(st.integers(0, 2**31 - 1))
def test_groups_stay_inside_their_region_and_keep_the_most_relevant_cells(seed):
    g = torch.Generator().manual_seed(seed)
    region = regions(4, 6, (2, 3))
    x = torch.randn(24, 5, generator=g, dtype=torch.float64)
    score = torch.randn(24, generator=g)
    take = torch.randint(1, 7, (4,), generator=g)
    assign, rep = group_by_relevance(region, score, x, take)
    assert (rep[1:] > rep[:-1]).all() and len(rep) == int(take.sum())
    assert (region[rep[assign]] == region).all()  # every cell joins a kept cell of its own region
    assert (assign[rep] == torch.arange(len(rep))).all()
    for r in range(4):
        cells = (region == r).nonzero()[:, 0]
        best = cells[score[cells].argsort(descending=True, stable=True)[: int(take[r])]]
        assert set(best.tolist()) == set(rep[region[rep] == r].tolist())
    merged, sizes = group_mean(x, torch.ones(24, dtype=torch.long), assign, len(rep))
    assert int(sizes.sum()) == 24
    assert torch.allclose((merged * sizes[:, None]).sum(0), x.sum(0))  # a size-weighted mean loses nothing


def test_a_region_kept_whole_keeps_its_tokens_exactly():
    x = torch.randn(8, 4)
    region = regions(2, 4, (2, 2))
    assign, rep = group_by_relevance(region, torch.randn(8), x, torch.tensor([4, 1]))
    merged, _ = group_mean(x, torch.ones(8, dtype=torch.long), assign, len(rep))
    inside = region[rep] == 0
    assert rep[inside].tolist() == (region == 0).nonzero()[:, 0].tolist()
    assert torch.equal(merged[inside], x[rep[inside]])
