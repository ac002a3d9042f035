"""The progress store: a results.json holding a row without a keep (a budget that follows the input) reads back."""

import json

from tokenfunnel.bench.store import RESULTS, Store


def test_previous_settings_name_keepless_rows(tmp_path):
    rows = [{"method": "none", "keep": 1.0}, {"method": "luvc", "keep": 0.25}, {"method": "difficulty", "keep": None}]
    (tmp_path / RESULTS).write_text(json.dumps({"rows": rows, "config": {}}))
    assert Store(tmp_path, {}).previous_settings() == ["none@1", "luvc@0.25", "difficulty"]
