import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.pool import cell_groups
from tokenfunnel.ops.select import best_per_group, gather_tokens, keep_mask, topk_in_order

FAST = settings(max_examples=50, deadline=None)


@st.composite
def score_sets(draw):
    b, n = draw(st.integers(1, 4)), draw(st.integers(1, 20))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    # few distinct values so that ties are common
    scores = torch.randint(0, draw(st.integers(1, 6)), (b, n), generator=g).double()
    return scores, draw(st.integers(0, n))


@FAST
@given(score_sets())
def test_indices_are_sorted_unique_and_in_range(case):
    scores, k = case
    idx = topk_in_order(scores, k)
    assert idx.shape == (scores.shape[0], k) and idx.dtype == torch.long
    assert (idx[:, 1:] > idx[:, :-1]).all()
    assert ((idx >= 0) & (idx < scores.shape[1])).all()


@FAST
@given(score_sets())
def test_indices_are_the_k_best_with_lower_index_winning_ties(case):
    scores, k = case
    idx = topk_in_order(scores, k)
    for b, row in enumerate(scores.tolist()):
        best = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        assert idx[b].tolist() == sorted(best)


@FAST
@given(score_sets(), st.integers(0, 3))
def test_gather_matches_fancy_indexing_and_mask(case, extra_dims):
    scores, k = case
    b, n = scores.shape
    x = torch.randn(b, n, *([2] * extra_dims))
    idx = topk_in_order(scores, k)
    out = gather_tokens(x, idx)
    assert out.shape == (b, k, *x.shape[2:])
    for row in range(b):
        assert torch.equal(out[row], x[row][idx[row]])
    mask = keep_mask(idx, n)
    assert mask.shape == (b, n) and (mask.sum(1) == k).all()
    for row in range(b):
        assert torch.equal(x[row][mask[row]], out[row])  # mask and indices select the same tokens in order


@FAST
@given(score_sets())
def test_keeping_everything_returns_arange(case):
    scores, _ = case
    n = scores.shape[1]
    assert torch.equal(topk_in_order(scores, n), torch.arange(n).expand_as(scores))


def test_k_zero_and_too_large():
    scores = torch.rand(2, 5)
    assert topk_in_order(scores, 0).shape == (2, 0)
    with pytest.raises(ValueError, match="0 <= k <= 5"):
        topk_in_order(scores, 6)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        topk_in_order(torch.rand(5), 2)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**16))
def test_best_per_group_marks_each_groups_highest_and_nothing_else(b, n, groups, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (b, n), generator=g).float()  # small integers: ties are common
    group = torch.randint(-1, groups, (b, n), generator=g)
    best = best_per_group(scores, group)
    for row in range(b):
        for k in range(groups):
            members = (group[row] == k).nonzero()[:, 0]
            picked = best[row, members].nonzero()[:, 0]
            if len(members) == 0:
                continue
            top = scores[row, members].max()
            first = members[(scores[row, members] == top).nonzero()[0, 0]]  # ties: the lower index
            assert members[picked].tolist() == [int(first)]
        assert not best[row][group[row] < 0].any()


def test_cell_groups_cut_each_image_into_blocks_of_its_aspect_by_size():
    cells = torch.arange(64 + 16)[None]  # an 8 x 8 image, then a 4 x 4 one
    groups = cell_groups(cells, [(8, 8), (4, 4)], 20)  # 16 blocks for the first (2 x 2 cells), 4 for the second
    first, second = groups[0, :64].view(8, 8), groups[0, 64:].view(4, 4)
    assert first[::2, ::2].flatten().tolist() == list(range(16)) and torch.equal(
        first, first[::2, ::2].repeat_interleave(2, 0).repeat_interleave(2, 1)
    )
    assert second.unique().tolist() == [16, 17, 18, 19]
    wide = cell_groups(torch.arange(8 * 2)[None], [(2, 8)], 4)  # a 2 x 8 image: 1 x 4 blocks
    assert wide[0].view(2, 8)[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert cell_groups(torch.tensor([[3, -1]]), [(2, 2)], 4).tolist() == [[3, -1]]
