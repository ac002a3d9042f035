"""The bundled VLM answers easy-VQA questions from its image (test split only, never trained on)."""

import pytest

from tokenfunnel.eval.runner import evaluate


def test_quick_accuracy_on_single_images_and_mosaics(bundled):
    model, processor = bundled
    # 60 questions each: a regression guard, well below the full-size figures (slow tests, README)
    assert evaluate(model, processor, "easyvqa", 60, seed=123)["accuracy"] >= 0.8
    assert evaluate(model, processor, "easyvqa-grid", 60, seed=123)["accuracy"] >= 0.65


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "bar"), [("easyvqa", 0.90), ("easyvqa-grid", 0.80)])
def test_full_accuracy_bars(bundled, dataset, bar):
    model, processor = bundled
    row = evaluate(model, processor, dataset, 600, seed=0)
    assert row["accuracy"] >= bar, row
