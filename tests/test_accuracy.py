"""The bundled VLM answers easy-VQA questions from its image (test split only, never trained on)."""

import pytest

from tokenfunnel.eval.runner import evaluate


def test_quick_accuracy_is_well_above_a_blind_model(bundled):
    model, processor = bundled
    # 60 balanced questions each. A model that ignores the image scores about 1/3 on single images (yes/no 1/2,
    # shape 1/3, colour 1/8); these floors catch broken weights or a broken pipeline, not small regressions.
    single = evaluate(model, processor, "easyvqa", 60, seed=123)
    assert single["accuracy"] >= 0.45, single
    assert single["accuracy_by_kind"]["shape"] >= 0.6, single
    grid = evaluate(model, processor, "easyvqa-grid", 60, seed=123)
    assert grid["accuracy"] >= 0.35, grid


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "bar"), [("easyvqa", 0.90), ("easyvqa-grid", 0.80)])
def test_full_accuracy_bars(bundled, dataset, bar):
    model, processor = bundled
    row = evaluate(model, processor, dataset, 600, seed=0)
    assert row["accuracy"] >= bar, row
