"""scripts/paired_margins.py: each setting against uncompressed, and pairs, on the same questions."""

import json
import sys
from pathlib import Path

import pytest

from repo_scripts import load
from tokenfunnel.bench.settings import Setting
from tokenfunnel.bench.store import Store
from tokenfunnel.data.easyvqa import load_set


def _sweep(folder: Path, truth: list[str], wrong: dict[str, list[int]], accuracy: dict[str, float]) -> None:
    rows = []
    for method, keep in (("none", 1.0), ("luvc", 0.25), ("luvc-focus", 0.25)):
        setting = Setting(method, keep)
        answers = ["nope" if i in wrong.get(setting.id, []) else t for i, t in enumerate(truth)]
        Store(folder, {}).save_accuracy(setting, {"answers": answers})
        rows.append({"method": method, "keep": keep, "accuracy": accuracy[setting.id]})
    config = {"dataset": "easyvqa-grid", "samples": len(truth), "seed": 1, "keeps": [0.25]}
    (folder / "results.json").write_text(json.dumps({"rows": rows, "config": config}))


def test_margins_are_paired_on_the_same_questions(tmp_path, monkeypatch):
    truth = [s.answer for s in load_set("easyvqa-grid", 4, 1)]
    wrong = {"luvc@0.25": [0, 1], "luvc-focus@0.25": [0]}
    _sweep(tmp_path, truth, wrong, {"none@1": 1.0, "luvc@0.25": 0.5, "luvc-focus@0.25": 0.75})
    out = tmp_path / "margins.json"
    argv = ["paired_margins.py", str(tmp_path), "--pairs", "luvc-focus:luvc", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load("paired_margins").main()
    got = json.loads(out.read_text())
    rows = {r["setting"]: r for r in got["rows"]}
    assert rows["luvc@0.25"]["of_uncompressed"] == 0.5 and rows["luvc@0.25"]["agreement"] == 0.5
    # differences -1, -1, 0, 0 against uncompressed: mean -0.5, sample variance 1/3, over 4 questions
    assert rows["luvc@0.25"]["vs_uncompressed"] == {"margin": -0.5, "se": round((1 / 3 / 4) ** 0.5, 4)}
    assert got["pairs"] == [{"pair": "luvc-focus@0.25 - luvc@0.25", "margin": 0.25, "se": 0.25}]


def test_answers_that_do_not_score_the_rows_accuracy_are_refused(tmp_path, monkeypatch):
    truth = [s.answer for s in load_set("easyvqa-grid", 2, 1)]
    _sweep(tmp_path, truth, {}, {"none@1": 1.0, "luvc@0.25": 0.5, "luvc-focus@0.25": 1.0})
    monkeypatch.setattr(sys, "argv", ["paired_margins.py", str(tmp_path)])
    with pytest.raises(SystemExit, match="do not score its accuracy"):
        load("paired_margins").main()
