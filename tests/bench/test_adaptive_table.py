"""scripts/adaptive_table.py: margins against LUVC come with the paired standard error of the same questions."""

import math

import pytest

from repo_scripts import load
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
