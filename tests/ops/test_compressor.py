"""The learned compressor as a pure torch module: what it keeps, how it folds, and that its importance MLP learns."""

from __future__ import annotations

import pytest
import torch

from tokenfunnel.ops.compressor import Compressor, group_softmax


def compressor(dim: int = 16, seed: int = 0) -> Compressor:
    torch.manual_seed(seed)
    c = Compressor(dim, hidden=8)
    torch.nn.init.normal_(c.gate[-1].weight)  # a gate that is not all zero, so folding is not a plain mean
    return c


def test_keeping_every_token_returns_the_input_itself():
    x = torch.randn(2, 1, 12, 16)
    merged, cells, sizes = compressor()(x, 12)
    assert torch.equal(merged, x.flatten(1, 2)) and torch.equal(cells, torch.arange(12).expand(2, -1))
    assert bool((sizes == 1).all())


def test_kept_cells_increase_sizes_add_up_and_lone_tokens_pass_bit_for_bit():
    x = torch.randn(3, 2, 10, 16)  # two images per sample: one top-k over all 20 tokens
    c = compressor()
    merged, cells, sizes = c(x, 6)
    assert merged.shape == (3, 6, 16)
    assert bool((cells.diff(dim=1) > 0).all())
    assert sizes.sum(1).tolist() == [20] * 3
    assert torch.equal(cells, c.scores(x).topk(6, dim=1).indices.sort(dim=1).values)
    flat = x.flatten(1, 2)
    for b in range(3):
        for slot in (sizes[b] == 1).nonzero()[:, 0].tolist():  # nothing folded into it: the kept token exactly
            assert torch.equal(merged[b, slot], flat[b, cells[b, slot]])


def test_each_sample_is_compressed_as_it_would_be_alone():
    x = torch.randn(3, 1, 16, 16)
    c = compressor()
    together = c(x, 5)
    for b in range(3):
        alone = c(x[b : b + 1], 5)
        assert torch.allclose(together[0][b], alone[0][0], atol=1e-6) and torch.equal(together[1][b], alone[1][0])


def test_group_softmax_sums_to_one_per_group_and_gives_a_lone_member_one():
    logit = torch.tensor([[3.0, -1.0, 0.5, 7.0]])
    group = torch.tensor([[0, 1, 0, 2]])
    w = group_softmax(logit, group, 3)
    sums = torch.zeros(1, 3).scatter_add(1, group, w)
    assert torch.allclose(sums, torch.ones(1, 3)) and w[0, 1] == 1.0 and w[0, 3] == 1.0


def test_the_importance_mlp_and_the_gate_get_gradients_through_the_merge():
    c = compressor()
    merged, _, _ = c(torch.randn(2, 1, 12, 16), 3)
    merged.square().sum().backward()
    assert c.importance[0].weight.grad.abs().sum() > 0 and c.gate[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("k", [0, 13])
def test_impossible_counts_are_refused(k):
    with pytest.raises(ValueError, match="between 1 and 12"):
        compressor()(torch.randn(1, 1, 12, 16), k)
