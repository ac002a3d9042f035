import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfunnel.ops.difficulty import (
    Weights,
    colour_variance,
    count_objects,
    difficulty,
    edge_density,
    question_signals,
    reduce_to,
    scaled_budget,
    tier_of,
)

FAST = settings(max_examples=40, deadline=None)


def squares(count: int, size: int = 64) -> torch.Tensor:
    """A white image with ``count`` separate dark squares."""
    img = torch.ones(3, size, size)
    for i in range(count):
        r, c = divmod(i, 4)
        img[:, 4 + 15 * r : 12 + 15 * r, 4 + 15 * c : 12 + 15 * c] = 0.1
    return img


def test_a_flat_image_has_no_edges_no_variance_and_no_objects():
    flat = torch.full((3, 64, 64), 0.5)
    assert edge_density(flat) == 0 and colour_variance(flat) == 0 and count_objects(flat) == 0


@pytest.mark.parametrize("count", [1, 3, 7])
def test_separate_shapes_are_counted(count):
    assert count_objects(squares(count)) == count


def test_busier_images_score_more_edges_and_variance():
    assert edge_density(squares(7)) > edge_density(squares(1)) > 0
    half = torch.zeros(3, 8, 8)
    half[:, :, 4:] = 1
    assert colour_variance(half) == pytest.approx(1.0)


def test_question_signals_find_negation_counting_and_reasoning():
    assert question_signals("How many circles are there?") == {
        "length": 5,
        "negation": 0.0,
        "counting": 1.0,
        "reasoning": 0.0,
    }
    s = question_signals("Why isn't the shape red? Explain.")
    assert s["negation"] == 1.0 and s["reasoning"] == 1.0 and s["counting"] == 0.0
    assert question_signals("How is it drawn?")["reasoning"] == 1.0
    assert question_signals("What is the number of sides?")["counting"] == 1.0


def test_difficulty_mixes_image_and_question_with_the_design_weights():
    signals = {"edges": 1.0, "colour": 1.0, "objects": 20, "length": 40, "negation": 1, "counting": 1, "reasoning": 1}
    assert difficulty(signals) == pytest.approx((1.0, 1.0, 1.0))
    easy = {"edges": 0.1, "colour": 0.5, "objects": 2, "length": 5, "negation": 0, "counting": 1, "reasoning": 0}
    value, image, question = difficulty(easy)
    assert image == pytest.approx(0.03 + 0.1 + 0.1) and question == pytest.approx(0.05 + 0.3)
    assert value == pytest.approx(0.6 * image + 0.4 * question)
    assert difficulty(easy, Weights(mix=(1.0, 0.0)))[0] == pytest.approx(image)


def test_tiers_and_budgets_scale_with_the_input():
    bounds = (0.3, 0.6, 0.85)
    assert [tier_of(v, bounds) for v in (0.0, 0.29, 0.3, 0.59, 0.84, 0.85, 1.0)] == [0, 0, 1, 1, 2, 3, 3]
    assert [scaled_budget(b, 256, 576) for b in (64, 144, 256, 400)] == [28, 64, 114, 178]
    assert scaled_budget(64, 576, 576) == 64 and scaled_budget(1, 4, 576) == 1


def _spectral_stand_in(x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    return x.float().norm(dim=-1)


@FAST
@given(st.integers(2, 300), st.floats(0.01, 1.0), st.integers(0, 2**31 - 1))
def test_the_merge_prune_loop_reaches_the_budget_and_loses_no_cell(n, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    budget = max(1, round(fraction * n))
    out = reduce_to(x, torch.arange(n), budget, _spectral_stand_in)
    k = out.features.shape[0]
    assert budget <= k <= max(budget, 1.5 * budget) or k == n <= budget
    assert (out.cells[1:] > out.cells[:-1]).all()
    merges = [s for s in out.steps if s in ("merge", "dedupe")]
    if "prune" not in out.steps:  # merges only: every input cell is still in some token
        assert int(out.sizes.sum()) == n
    assert out.steps == sorted(out.steps, key=["merge", "prune", "dedupe"].index) and len(merges) >= 0


def test_near_duplicates_are_folded_but_never_below_the_budget():
    base = torch.randn(3, 8, dtype=torch.float64)
    x = base.repeat_interleave(2, dim=0)  # 6 tokens, each twice: within 1.5x of a budget of 4, so no merge or prune
    out = reduce_to(x, torch.arange(6), 4, _spectral_stand_in)
    assert out.steps == ["dedupe"] and out.features.shape[0] == 4 and sorted(out.sizes.tolist()) == [1, 1, 2, 2]
    twins = out.sizes == 2
    assert torch.allclose(out.features[twins], x[out.cells[twins]])  # a folded pair of equal tokens is that token
    assert reduce_to(x, torch.arange(6), 5, _spectral_stand_in).features.shape[0] == 5
    assert reduce_to(x, torch.arange(6), 6, _spectral_stand_in).steps == []
    with pytest.raises(ValueError, match="at least one token"):
        reduce_to(x, torch.arange(8), 0, _spectral_stand_in)


def test_a_bias_shifts_every_difficulty_alike():
    signals = {"edges": 0.2, "colour": 0.1, "objects": 3, "length": 8, "negation": 0, "counting": 0, "reasoning": 1}
    plain, shifted = difficulty(signals), difficulty(signals, Weights(bias=0.25))
    assert shifted[0] == pytest.approx(plain[0] + 0.25) and shifted[1:] == plain[1:]
