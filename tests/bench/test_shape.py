"""`--model llava-7b-shape`: random weights, synthetic prompts, timing and FLOPs only (accuracy null)."""

import json

from tiny import build
from tokenfunnel.bench import models

from .helpers import invoke


def test_shape_model_rows(monkeypatch, tmp_path):
    built = []

    def tiny_shaped(layers: int):  # the real one is 7B-wide; the pipeline is the same
        built.append(layers)
        return build("clip", text_layers=layers)

    monkeypatch.setattr(models, "llava_shaped", tiny_shaped)
    args = ["bench", "--model", "llava-7b-shape", "--layers", "2", "--methods", "none,luvc", "--keep", "0.5"]
    result = invoke([*args, "--timing-samples", "2", "--repeats", "1", "--threads", "1", "--out", tmp_path, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert built == [2] and data["config"]["layers"] == 2 and data["config"]["dataset"] == "synthetic"
    for row in data["rows"]:
        assert row["accuracy"] is None and row["samples"] is None and row["dataset"] == "synthetic"
        assert row["layers"] == 2 and len(row["llm_visual_tokens"]) == 2 and row["timing_prompts"] == 2
        assert row["visual_tokens"] <= 64 and row["speedup_llm_prefill"] > 0 and row["decode_tok_s"] > 0
    assert (tmp_path / "pareto.png").exists()
