import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.select import gather_tokens, keep_mask, topk_in_order

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
