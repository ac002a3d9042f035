"""scripts/answer_flips.py: where a setting's answers part from the uncompressed ones, by kind and tile."""

import json
import sys

import pytest

from repo_scripts import load
from tokenfunnel.data import easyvqa


def test_outcomes_pair_truth_reference_and_answer():
    flips = load("answer_flips")
    assert [flips.outcome("a", r, g) for r, g in (("a", "a"), ("a", "b"), ("b", "a"), ("b", "b"))] == list(
        flips.OUTCOMES
    )


def test_lost_answers_are_counted_by_kind_and_tile_and_checked_against_the_other_tiles():
    flips = load("answer_flips")
    items = easyvqa.load_set("easyvqa-grid-dev", 6, 0)
    reference = [s.answer for s in items]
    # question 1 (a shape question) answered with what another tile shows, question 2 (colour) with nothing shown
    shape_q, colour_q = items[1], items[2]
    assert (shape_q.kind, colour_q.kind) == ("shape", "color")
    shown = flips.other_tiles(shape_q, "train")
    other = sorted(shown - {shape_q.answer})
    assert other, "this draw's other tiles show a shape the named one does not"
    got = list(reference)
    got[1] = other[0]
    got[2] = "nope"
    result = flips.flips(items, reference, got, "train")
    assert result["by_kind"]["color"]["lost"] == 1
    assert result["by_kind"]["shape"]["lost"] == 1
    assert sum(t["lost"] for t in result["by_tile"].values()) == 2
    assert sum(t["kept"] for t in result["by_tile"].values()) == 4
    assert result["lost_answer_shown_by_another_tile"] == {"yes": 1, "no": 1}


def test_refuses_rows_that_kept_no_answers(tmp_path, monkeypatch, capsys):
    rows = tmp_path / "rows.json"
    items = easyvqa.load_set("easyvqa-grid-dev", 3, 0)
    rows.write_text(
        json.dumps(
            {
                "dataset": "easyvqa-grid-dev",
                "samples": 3,
                "reference": [s.answer for s in items],
                "rows": [{"variant": "uncompressed", "keep": 1.0}],
            }
        )
    )
    monkeypatch.setattr(sys, "argv", ["answer_flips.py", str(rows)])
    with pytest.raises(SystemExit):
        load("answer_flips").main()
    assert "saved its answers" in capsys.readouterr().err


def test_paired_margin_in_points_with_its_standard_error():
    flips = load("answer_flips")
    assert flips.paired([True, True, False, True], [True, False, False, True]) == {"points": 25.0, "se": 25.0}


def test_rows_files_must_share_their_questions(tmp_path):
    flips = load("answer_flips")
    head = {"dataset": "easyvqa-grid-dev", "samples": 2, "weights": "w", "reference": ["yes", "no"]}
    row = {"variant": "v", "keep": 0.25, "answers": ["yes", "yes"]}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({**head, "rows": [row]}))
    b.write_text(json.dumps({**head, "reference": ["no", "no"], "rows": [row]}))
    assert flips.load_rows([a, a])[1] == [row, row]
    with pytest.raises(SystemExit, match="other questions or weights"):
        flips.load_rows([a, b])


def test_rows_of_another_draw_of_questions_are_kept_apart(tmp_path):
    flips = load("answer_flips")
    head = {"dataset": "easyvqa-grid-dev", "samples": 2, "weights": "w", "reference": ["yes", "no"]}
    row = {"variant": "v", "keep": 0.25, "answers": ["yes", "yes"]}
    old, zero, one = tmp_path / "old.json", tmp_path / "zero.json", tmp_path / "one.json"
    old.write_text(json.dumps({**head, "rows": [row]}))  # written before --seed: seed 0
    zero.write_text(json.dumps({**head, "seed": 0, "rows": [row]}))
    one.write_text(json.dumps({**head, "seed": 1, "rows": [row]}))
    assert flips.load_rows([old, zero])[0]["seed"] == 0
    assert flips.load_rows([one])[0]["seed"] == 1
    with pytest.raises(SystemExit, match="other questions or weights"):
        flips.load_rows([old, one])
