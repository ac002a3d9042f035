"""scripts/adaptive_table.py and the paired figures it shares: margins come with the paired standard error."""

import math

import pytest

from repo_scripts import load
from tokenfunnel.bench.accuracy import paired_difference
from tokenfunnel.bench.settings import Setting
from tokenfunnel.bench.store import Store


def test_paired_se_is_the_spread_of_per_question_differences():
    table = load("adaptive_table")
    assert table.paired_se([True, False, True], [True, False, True]) == 0.0  # same answers: no doubt about 0
    # differences 1, 0, 0, 1: mean 0.5, sample variance 1/3, over 4 questions
    assert table.paired_se([True, False, True, True], [False, False, True, False]) == pytest.approx(
        math.sqrt(1 / 3 / 4)
    )
    assert table.paired_se(None, [True, True]) is None


def test_answers_that_do_not_score_the_rows_accuracy_are_refused(tmp_path):
    table = load("adaptive_table")
    Store(tmp_path, {}).save_accuracy(Setting("luvc", 0.25), {"accuracy": 0.5, "answers": ["yes", "no"]})
    row = {"method": "luvc", "keep": 0.25, "accuracy": 0.5, "realised_keep": 0.25}
    entries, hits = table.scored([row], tmp_path, ["yes", "yes"], False)
    assert hits["luvc@0.25"] == [True, False] and entries["luvc@0.25"]["accuracy"] == 0.5
    with pytest.raises(SystemExit, match="do not score its accuracy"):
        table.scored([{**row, "accuracy": 1.0}], tmp_path, ["yes", "yes"], False)


def test_paired_difference_is_the_mean_gap_with_its_standard_error():
    a, b = [True, False, True, True], [False, False, True, False]
    assert paired_difference(a, b) == (0.5, pytest.approx(math.sqrt(1 / 3 / 4)))
    with pytest.raises(ValueError, match="score more samples"):
        paired_difference([True], [False])
