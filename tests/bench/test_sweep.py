"""The tiny sweep on the bundled VLM: every row field present and sane, files written, --json parses."""

import csv
import json
import shutil
from dataclasses import dataclass

import pytest

from tokenfunnel.bench import accuracy, profile, sweep
from tokenfunnel.bench.flops import prefill_flops
from tokenfunnel.bench.rows import COLUMNS
from tokenfunnel.methods.luvc import LUVC, LUVCConfig
from tokenfunnel.methods.registry import METHODS

from .helpers import TINY, invoke

NUMBERS = ("vision_s", "llm_prefill_s", "ttft_s", "decode_tok_s", "kv_cache_bytes", "peak_mem_bytes")
NUMBERS += ("flops_vision", "flops_llm", "speedup_llm_prefill", "speedup_ttft", "flops_ideal_speedup")


def test_rows(tiny_sweep, bundled):
    _, data = tiny_sweep
    model, _ = bundled
    layers = model.config.text_config.num_hidden_layers
    none, luvc = data["rows"]
    for row in (none, luvc):
        assert list(row) == list(COLUMNS)
        assert row["error"] is None
        assert row["model"] == "bundled" and row["dataset"] == "easyvqa-grid" and row["samples"] == 4
        assert 0 <= row["accuracy"] <= 1
        assert all(row[k] > 0 for k in NUMBERS), row
        assert len(row["llm_visual_tokens"]) == layers == row["layers"]
        assert row["ttft_s"] > row["llm_prefill_s"] > 0 and row["ttft_s"] > row["vision_s"]
        assert 0 <= row["overhead_frac"] < 1 and row["threads"] == 1 and row["timing_prompts"] == 1
        text = row["text_tokens"]
        assert row["flops_llm"] == prefill_flops([text + n for n in row["llm_visual_tokens"]], model.config.text_config)
    assert (none["method"], none["keep"], none["realised_keep"]) == ("none", 1.0, 1.0)
    assert none["llm_visual_tokens"] == [none["visual_tokens"]] * layers == [256] * layers
    assert none["overhead_s"] == 0 and none["speedup_llm_prefill"] == 1.0 and none["flops_ideal_speedup"] == 1.0
    assert (luvc["method"], luvc["keep"]) == ("luvc", 0.5)
    assert luvc["realised_keep"] == pytest.approx(0.5, abs=0.02)
    assert luvc["flops_ideal_speedup"] > 1.2
    assert luvc["kv_cache_bytes"] < none["kv_cache_bytes"] and luvc["peak_mem_bytes"] < none["peak_mem_bytes"]
    assert luvc["visual_tokens"] == 128 and luvc["llm_visual_tokens"] == [128] * layers  # the defaults on LLaVA


def test_files_and_json(tiny_sweep):
    out, data = tiny_sweep
    assert json.loads((out / "results.json").read_text())["rows"] == data["rows"]
    assert set(data) == {"rows", "machine", "versions", "commit", "config"}
    assert data["config"]["samples"] == 4 and data["config"]["threads"] == 1 and data["config"]["ranks"] == 1
    assert data["machine"]["threads"] == 1 and "torch" in data["versions"]
    table = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["keep"]) for r in table] == [("none", "1.0"), ("luvc", "0.5")]
    assert "| luvc | 0.5 |" in (out / "results.md").read_text()
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_a_second_run_recomputes_nothing(tiny_sweep, use_bundled, monkeypatch):
    out, data = tiny_sweep

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a finished part")

    for module, name in ((accuracy, "score_shard"), (sweep, "profile"), (sweep, "time_prompt")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(profile, "decode_rate", refuse)
    result = invoke([*TINY, "--out", out, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == data["rows"]


@dataclass(frozen=True)
class RetunedConfig(LUVCConfig):
    """LUVC after a change of its defaults."""

    cutoff: float = 0.3


def test_a_part_saved_under_other_defaults_is_measured_again(tiny_sweep, use_bundled, monkeypatch, tmp_path):
    out, _ = tiny_sweep
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)  # the session's sweep stays as the other tests expect it
    monkeypatch.setitem(METHODS, "luvc", (RetunedConfig, LUVC))
    ran = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            ran.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((accuracy, "score_shard"), (sweep, "profile"), (sweep, "time_prompt")):
        spy(module, name)
    result = invoke([*TINY, "--out", copy, "--json"])
    assert result.exit_code == 0, result.output
    # luvc is scored and profiled again, none is not; the interleaved timing group changed, so it is timed again
    assert ran == ["score_shard", "profile", "time_prompt"]
    saved = json.loads((copy / "bench-progress" / "accuracy" / "luvc@0.5.json").read_text())
    assert saved["options"]["cutoff"] == 0.3 and saved["options"]["keep"] == 0.5
    none = json.loads((copy / "bench-progress" / "accuracy" / "none@1.json").read_text())
    assert none["options"] == {}


class PickyConfig(LUVCConfig):
    """LUVC under another name that refuses every keep, as a method that cannot reach a budget does."""

    def __post_init__(self) -> None:
        raise ValueError(f"picky cannot reach keep {self.keep}")


def test_a_refused_setting_is_an_error_row_and_never_runs(tiny_sweep, use_bundled, monkeypatch, tmp_path):
    out, data = tiny_sweep
    monkeypatch.setitem(METHODS, "picky", (PickyConfig, LUVC))
    monkeypatch.setattr(sweep, "time_prompt", lambda *a, **k: pytest.fail("timed again"))
    # a new setting in the same folder: finished parts are reused, only the new one is tried (and refused)
    result = invoke([*TINY[:8], "none,luvc,picky", *TINY[9:], "--out", out, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert rows[:2] == data["rows"]
    picky = rows[2]
    assert (picky["method"], picky["keep"], picky["error"]) == ("picky", 0.5, "picky cannot reach keep 0.5")
    assert all(picky[k] is None for k in ("accuracy", "ttft_s", "flops_llm", "peak_mem_bytes"))
    assert "refused: picky cannot reach keep 0.5" in (out / "results.md").read_text()


@dataclass(frozen=True)
class RefusingAdaptiveConfig:
    """A method without a keep (its budget follows the input) that refuses this model."""

    def __post_init__(self) -> None:
        raise ValueError("adaptive cannot read this model")


def test_a_keepless_row_prints_in_the_console_table(tiny_sweep, use_bundled, monkeypatch):
    out, data = tiny_sweep
    monkeypatch.setitem(METHODS, "adaptive", (RefusingAdaptiveConfig, LUVC))
    monkeypatch.setattr(sweep, "time_prompt", lambda *a, **k: pytest.fail("timed again"))
    result = invoke([*TINY[:8], "none,luvc,adaptive", *TINY[9:], "--out", out])
    assert result.exit_code == 0, result.output
    assert "refused: ada" in result.output  # the row is printed (rich narrows its cells to the test's 80 columns)
