"""Collecting sweeps into one published results.json: a sweep replaces its own (model, dataset, name) rows only."""

from __future__ import annotations

import json

import pytest

from tokenfunnel.bench.collect import collect, main, markdown
from tokenfunnel.bench.report import to_csv


def sweep(dataset: str, accuracy: float, commit: str = "abc") -> dict:
    config = {"model": "bundled", "dataset": dataset, "samples": 4, "seed": 0, "timing_samples": 0, "repeats": 1}
    config.update(threads=2, device="cpu")
    rows = [
        {"model": "bundled", "dataset": dataset, "method": m, "keep": k, "accuracy": accuracy, "error": "skip"}
        for m, k in (("none", 1.0), ("pvc", None))
    ]
    return {"rows": rows, "machine": {"cpu": "x"}, "versions": {}, "commit": commit, "config": config}


def test_a_sweep_replaces_its_own_rows_and_keeps_the_others_in_place():
    grid, clips = sweep("easyvqa-grid", 0.5), sweep("easyvqa-clips", 0.4)
    both = collect(clips, grid)  # a single sweep's results.json is read as a collection of one
    assert [r["config"]["dataset"] for r in both["runs"]] == ["easyvqa-grid", "easyvqa-clips"]
    assert [r["dataset"] for r in both["rows"]] == ["easyvqa-grid"] * 2 + ["easyvqa-clips"] * 2
    again = collect(sweep("easyvqa-grid", 0.9, commit="def"), both)
    assert [r["config"]["dataset"] for r in again["runs"]] == ["easyvqa-grid", "easyvqa-clips"]
    assert again["runs"][0]["commit"] == "def" and again["runs"][1]["commit"] == "abc"
    assert [r["accuracy"] for r in again["rows"]] == [0.9, 0.9, 0.4, 0.4]


def test_collecting_a_collection_or_a_foreign_file_is_refused():
    both = collect(sweep("easyvqa-clips", 0.4), None)
    with pytest.raises(ValueError, match="not a collection"):
        collect(both, None)
    with pytest.raises(ValueError, match="not a tokenfunnel bench results.json"):
        collect(sweep("easyvqa", 0.4), {"accuracy": 0.9})


def test_the_command_writes_json_csv_and_one_table_per_sweep(tmp_path, capsys):
    for name, data in (("grid", sweep("easyvqa-grid", 0.5)), ("clips", sweep("easyvqa-clips", 0.4))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))
        main([str(tmp_path / name), str(tmp_path / "published")])
    published = tmp_path / "published"
    assert len(json.loads((published / "results.json").read_text())["rows"]) == 4
    assert (published / "results.csv").read_text().count("\n") == 5
    tables = (published / "results.md").read_text()
    assert tables.index("dataset easyvqa-grid") < tables.index("dataset easyvqa-clips")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), str(published)])
    assert "run tokenfunnel bench --out" in capsys.readouterr().err


def test_a_named_sweep_sits_beside_an_unnamed_one_of_the_same_model_and_dataset():
    every = collect(sweep("easyvqa", 0.9), None)
    both = collect(sweep("easyvqa", 0.8), every, name="adaptive")
    assert [r.get("name") for r in both["runs"]] == [None, "adaptive"]
    assert [(r.get("sweep"), r["accuracy"]) for r in both["rows"]] == [(None, 0.9)] * 2 + [("adaptive", 0.8)] * 2
    again = collect(sweep("easyvqa", 0.7), both, name="adaptive")  # replaces the named one only
    assert [r["accuracy"] for r in again["rows"]] == [0.9, 0.9, 0.7, 0.7]
    assert "adaptive sweep: " in markdown(again)
    assert to_csv(again["rows"]).splitlines()[0].startswith("sweep,model,")
