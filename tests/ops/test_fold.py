"""fold_rest: the kept tokens of a drop stay bit for bit, the dropped ones are averaged onto contextual slots."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.setmerge import fold_rest


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 24), data=st.data())
def test_dominant_tokens_are_untouched_and_groups_are_size_weighted_means(n, data):
    count = data.draw(st.integers(1, n - 1))
    contextual = data.draw(st.integers(1, count))
    seed = data.draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, 5, generator=g)
    size = torch.randint(1, 4, (2, n), generator=g)
    importance = torch.randn(2, n, generator=g)
    idx, out, sizes = fold_rest(x, size, importance, x, count, contextual)
    assert idx.shape == (2, count) and out.shape == (2, count, 5)
    assert bool((idx[:, 1:] > idx[:, :-1]).all())  # in sequence order
    assert torch.equal(sizes.sum(1), size.sum(1))  # every token is held by exactly one slot
    top = importance.argsort(dim=1, descending=True, stable=True)[:, : count - contextual]
    for b in range(2):
        for j in range(count):
            i = int(idx[b, j])
            if i in top[b].tolist():
                assert torch.equal(out[b, j], x[b, i]) and sizes[b, j] == size[b, i]
    # the weighted total is conserved: each slot holds the weighted mean of what it holds
    torch.testing.assert_close((out * sizes[..., None]).sum(1), (x * size[..., None]).sum(1), atol=1e-4, rtol=1e-5)


def test_nothing_folds_when_every_token_is_kept():
    x = torch.randn(1, 6, 3)
    size = torch.ones(1, 6, dtype=torch.long)
    idx, out, sizes = fold_rest(x, size, torch.randn(1, 6), x, 6, 2)
    assert idx.tolist() == [list(range(6))] and torch.equal(out, x) and torch.equal(sizes, size)


def test_a_dropped_token_joins_the_contextual_slot_it_is_most_alike():
    # tokens 0-1 score highest and stay; of the rest (2, 3, 4, 5) the contextual targets are 2 and 4
    x = torch.tensor([[[1.0, 0], [0, 1], [1, 1], [1, 0.9], [-1, 0], [-1, 0.1]]])
    size = torch.ones(1, 6, dtype=torch.long)
    importance = torch.tensor([[5.0, 4, 0, 0, 0, 0]])
    idx, out, sizes = fold_rest(x, size, importance, x, 4, 2)
    assert idx.tolist() == [[0, 1, 2, 4]] and sizes.tolist() == [[1, 1, 2, 2]]
    torch.testing.assert_close(out[0, 2], (x[0, 2] + x[0, 3]) / 2)
    torch.testing.assert_close(out[0, 3], (x[0, 4] + x[0, 5]) / 2)
