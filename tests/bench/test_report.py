"""results.csv/results.md and the Pareto figure from rows, including refused settings and timing-only models."""

import csv
import io

from tokenfunnel.bench.report import to_csv, to_markdown
from tokenfunnel.bench.rows import COLUMNS, build_row
from tokenfunnel.bench.settings import Setting
from tokenfunnel.viz.pareto import write_pareto

CONFIG = {"model": "m", "dataset": "d", "samples": 4, "seed": 0, "timing_samples": 1, "repeats": 1}
CONFIG |= {"threads": 1, "device": "cpu"}


def rows(accuracy: float | None = 0.5) -> list[dict]:
    common = {"model": "m", "dataset": "d"}
    profile = {"realised_keep": 1.0, "encoder_keep": 1.0, "visual_tokens": 4, "original_visual_tokens": 4}
    profile |= {"text_tokens": 2, "llm_visual_tokens": [4, 4], "encoder_tokens": [5, 5], "decode_tok_s": 10.0}
    profile |= {"kv_cache_bytes": 100, "peak_mem_bytes": 1000, "flops_vision": 1e9, "flops_llm": 2e9}
    half = profile | {"realised_keep": 0.5, "llm_visual_tokens": [4, 0], "flops_llm": 1e9}
    times = {f: [1.0] for f in ("vision_s", "llm_prefill_s", "ttft_s", "overhead_s")}
    timed = [{"none@1": times, "x@0.5": {**times, "llm_prefill_s": [0.5], "overhead_s": [0.1]}}]
    score = None if accuracy is None else {"accuracy": accuracy, "accuracy_by_kind": {"color": accuracy}}
    return [
        build_row(Setting("none", 1.0), common, None, score, profile, profile, timed),
        build_row(Setting("x", 0.5), common, None, score, half, profile, timed),
        build_row(Setting("x", 0.11), common, "x cannot reach keep 0.11", None, None, profile, timed),
    ]


def test_rows_hold_every_column_and_refusals_hold_nulls():
    none, half, refused = rows()
    assert list(none) == list(COLUMNS)
    assert half["flops_ideal_speedup"] == 2.0 and half["speedup_llm_prefill"] == 2.0
    assert half["overhead_frac"] == 0.1
    assert refused["error"] == "x cannot reach keep 0.11"
    assert all(refused[k] is None for k in ("accuracy", "llm_prefill_s", "flops_llm", "speedup_ttft"))


def test_csv_and_markdown():
    table = list(csv.DictReader(io.StringIO(to_csv(rows()))))
    assert [r["method"] for r in table] == ["none", "x", "x"]
    assert table[1]["llm_visual_tokens"] == "[4, 0]"
    text = to_markdown(rows(), CONFIG)
    assert "| x | 0.5 | 0.500 | 0.500 |" in text
    assert "refused: x cannot reach keep 0.11" in text
    widths = {line.count("|") for line in text.splitlines() if line.startswith("|")}
    assert widths == {15}  # every table line has the header's 14 columns


def test_pareto_png(tmp_path):
    for accuracy in (0.5, None):  # None: a timing-only model (random weights)
        path = tmp_path / f"pareto-{accuracy}.png"
        write_pareto(rows(accuracy), path, "title")
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_a_method_without_keep_runs_once_and_reports_its_mean_over_the_questions(tmp_path):
    from tokenfunnel.bench.accuracy import merge
    from tokenfunnel.bench.settings import NONE, settings_for

    settings = settings_for(["luvc", "pvc"], [0.5, 0.25])
    assert [s.id for s in settings] == ["none@1", "luvc@0.5", "luvc@0.25", "pvc"]
    part = {"index": [0, 1], "answer": ["a", "b"], "correct": [True, False], "kind": ["color"] * 2}
    score = merge([part | {"keep": [0.1, 0.3], "visual": [10, 30]}])
    assert score["mean_keep"] == 0.2 and score["mean_visual_tokens"] == 20
    profile = rows()[1]  # a profile of one prompt, whose own keep (0.5) is not what the row reports
    row = build_row(Setting("pvc", None), {"model": "m"}, None, score, profile, profile, [])
    assert row["keep"] is None and row["realised_keep"] == 0.2 and row["visual_tokens"] == 20
    # a method asked for a keep whose budget still differs per question (detail without details) likewise
    asked = build_row(Setting("detail", 0.5), {"model": "m"}, None, score, profile, profile, [])
    assert asked["keep"] == 0.5 and asked["realised_keep"] == 0.2 and asked["visual_tokens"] == 20
    none = merge([part | {"keep": [None, None], "visual": [None, None]}])
    uncompressed = build_row(NONE, {"model": "m"}, None, none, profile, profile, [])
    assert uncompressed["realised_keep"] == profile["realised_keep"]
    text = to_markdown([*rows(), row, {**row, "method": "odd", "visual_tokens": 31.52}], CONFIG)
    assert "| pvc | follows input | 0.200 |" in text
    assert "| 20 | " in text and "| 31.5 | " in text  # a mean count: whole when it is, else one decimal
    write_pareto([*rows(), row], tmp_path / "p.png", "title")
