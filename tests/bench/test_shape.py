"""`--model llava-7b-shape`: random weights, synthetic prompts, timing and FLOPs only (accuracy null)."""

import json

import pytest
import torch

from tiny import build
from tokenfunnel.bench import models

from .helpers import invoke


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shape_model_rows(monkeypatch, tmp_path, dtype):
    built = []

    def tiny_shaped(layers: int, device="cpu", dtype=torch.float32):  # the real one is 7B-wide; same pipeline
        built.append((layers, dtype))
        return build("clip", text_layers=layers).to(device, dtype)

    monkeypatch.setattr(models, "llava_shaped", tiny_shaped)
    args = ["bench", "--model", "llava-7b-shape", "--layers", "2", "--methods", "none,luvc", "--keep", "0.5"]
    args += ["--dtype", dtype, "--timing-samples", "2", "--repeats", "1", "--threads", "1", "--out", tmp_path]
    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert built == [(2, getattr(torch, dtype))] and data["config"]["dtype"] == dtype
    assert data["config"]["layers"] == 2 and data["config"]["dataset"] == "synthetic"
    for row in data["rows"]:
        assert row["dtype"] == dtype and row["error"] is None
        assert row["accuracy"] is None and row["samples"] is None and row["dataset"] == "synthetic"
        assert row["layers"] == 2 and len(row["llm_visual_tokens"]) == 2 and row["timing_prompts"] == 2
        assert row["visual_tokens"] <= 64 and row["speedup_llm_prefill"] > 0 and row["decode_tok_s"] > 0
    assert (tmp_path / "pareto.png").exists()


def test_a_sweep_in_another_dtype_is_refused_not_resumed(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "llava_shaped", lambda layers, device="cpu", dtype=torch.float32: build("clip"))
    args = ["bench", "--model", "llava-7b-shape", "--layers", "2", "--methods", "none", "--timing-samples", "0"]
    assert invoke([*args, "--out", tmp_path]).exit_code == 0
    # a sweep stored before --dtype existed has no dtype: it ran in float32, and resumes as such
    config, results = tmp_path / "bench-progress" / "config.json", tmp_path / "results.json"
    stored = json.loads(config.read_text())
    config.write_text(json.dumps({k: v for k, v in stored.items() if k != "dtype"}))
    found = json.loads(results.read_text())
    del found["config"]["dtype"]
    results.write_text(json.dumps(found))
    assert invoke([*args, "--out", tmp_path]).exit_code == 0
    refused = invoke([*args, "--dtype", "bfloat16", "--out", tmp_path])
    assert refused.exit_code == 2 and "dtype 'float32' (now 'bfloat16')" in refused.output


def test_every_method_runs_in_bfloat16_or_is_refused_with_a_reason(monkeypatch, tmp_path):
    # what a GPU run of scripts/gpu_speed.sh does, on a tiny model: no method may crash in low precision
    monkeypatch.setattr(
        models, "llava_shaped", lambda layers, device="cpu", dtype=torch.float32: build("clip").to(device, dtype)
    )
    args = ["bench", "--model", "llava-7b-shape", "--methods", "all", "--keep", "0.5", "--dtype", "bfloat16"]
    result = invoke([*args, "--timing-samples", "1", "--repeats", "1", "--threads", "1", "--out", tmp_path, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    # a shape model has no tokenizer: the methods that read the question say so; every other one runs
    ran = {row["method"] for row in rows if not row["error"]}
    assert all("tokenizer" in row["error"] for row in rows if row["error"])
    assert ran >= {"luvc", "fastv", "pdrop", "dart", "random", "visionzip", "tome", "pool", "downsample", "pvc"}
    for row in rows:
        if not row["error"]:
            assert row["speedup_llm_prefill"] > 0 and row["flops_ideal_speedup"] >= 1, row
