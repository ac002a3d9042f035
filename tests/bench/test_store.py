"""The progress store: a results.json holding a row without a keep (a budget that follows the input) reads back."""

import json

from tokenfunnel.bench.store import RESULTS, Store


def test_previous_settings_name_keepless_rows(tmp_path):
    rows = [{"method": "none", "keep": 1.0}, {"method": "luvc", "keep": 0.25}, {"method": "difficulty", "keep": None}]
    (tmp_path / RESULTS).write_text(json.dumps({"rows": rows, "config": {}}))
    assert Store(tmp_path, {}).previous_settings() == ["none@1", "luvc@0.25", "difficulty"]


def test_a_finished_sweeps_answers_read_back_whatever_options_it_ran_with(tmp_path):
    """Measuring refuses a part saved under other options; reading a finished sweep back (scripts/adaptive_table.py)
    must not, or every agreement with the uncompressed answers goes missing."""
    from tokenfunnel.bench.settings import Setting

    writer = Store(tmp_path, {})
    writer.expect({"luvc@0.25": {"keep": 0.25, "spectrum": "1d"}})
    writer.save_accuracy(Setting("luvc", 0.25), {"accuracy": 0.5, "answers": ["yes", "no"]})
    reader = Store(tmp_path, {})
    assert reader.accuracy(Setting("luvc", 0.25)) is None  # no expectation set: a measuring run would redo it
    saved = reader.saved_accuracy(Setting("luvc", 0.25))
    assert saved["answers"] == ["yes", "no"] and saved["options"] == {"keep": 0.25, "spectrum": "1d"}
