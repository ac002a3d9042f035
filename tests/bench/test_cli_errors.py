"""Bad input to `tokenfunnel bench` ends in one clear line and exit code 2, before any model is loaded."""

import json

import pytest

from tokenfunnel.bench.settings import available_methods

from .helpers import TINY, invoke, one_clear_line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "none,zip"], "unknown method 'zip': choose from none, luvc"),
        (["--methods", ","], "unknown method (none given)"),
        (["--dataset", "coco"], "unknown dataset 'coco'"),
        (["--keep", "0.5,0"], "--keep must be in (0, 1], got 0"),
        (["--keep", "1.5"], "--keep must be in (0, 1], got 1.5"),
        (["--keep", "half"], "--keep takes comma-separated numbers"),
        (["--samples", "0"], "--samples must be a positive"),
        (["--dataset", "easyvqa", "--samples", "1000000"], "--samples 1000000 is more than easyvqa holds"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--timing-samples", "-1"], "--timing-samples must be at least 0"),
        (["--device", "tpu"], "--device must be auto, cpu or cuda"),
        (["--dtype", "fp8"], "--dtype must be one of float32, bfloat16, float16, got 'fp8'"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    one_clear_line(invoke([*TINY, "--out", tmp_path, *args]), message)


def test_unknown_method_lists_every_registered_one(tmp_path):
    result = invoke([*TINY, "--out", tmp_path, "--methods", "nope"])
    one_clear_line(result, "unknown method 'nope'")
    assert all(name in result.output for name in available_methods())


def test_unknown_model_and_a_folder_without_a_processor(tmp_path):
    result = invoke([*TINY, "--out", tmp_path / "a", "--model", "no/such/model"])
    one_clear_line(result, "unknown model 'no/such/model'")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    one_clear_line(invoke([*TINY, "--out", tmp_path / "b", "--model", empty]), "cannot build a processor from")


def test_output_folder_of_another_configuration_is_refused(tmp_path):
    progress = tmp_path / "bench-progress"
    progress.mkdir()
    (progress / "config.json").write_text(json.dumps({"model": "bundled", "samples": 200}))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = invoke([*TINY, "--out", tmp_path])
    one_clear_line(result, "holds a sweep of another configuration")
    assert "samples 200 (now 4)" in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_results_json_of_another_tool_or_configuration_is_refused(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 0.9}))
    one_clear_line(invoke([*TINY, "--out", tmp_path]), "is not a tokenfunnel bench result")
    (tmp_path / "results.json").write_text(json.dumps({"rows": [], "config": {"dataset": "easyvqa"}}))
    one_clear_line(invoke([*TINY, "--out", tmp_path]), "dataset 'easyvqa' (now 'easyvqa-grid')")


def test_a_folder_that_gathers_sweeps_is_not_a_sweep_folder(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"rows": [], "runs": []}))
    one_clear_line(invoke([*TINY, "--out", tmp_path]), "gathers several sweeps")
