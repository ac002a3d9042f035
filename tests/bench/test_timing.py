"""Medians and speedups from interleaved per-prompt timings."""

import pytest

from tokenfunnel.bench.rows import PROFILE_KEYS, build_row
from tokenfunnel.bench.settings import Setting
from tokenfunnel.bench.timing import FIELDS, summarise


def prompt(none: float, fast: float) -> dict:
    runs = lambda s: {f: [s, s * 2, s * 1.1] for f in FIELDS}  # noqa: E731  median over repeats = 1.1 s
    return {"none@1": runs(none), "luvc@0.5": runs(fast)}


def test_speedup_is_the_median_of_per_prompt_ratios():
    # the machine slowed down during the second prompt: per-prompt ratios stay 2, 2 and 4
    prompts = [prompt(1.0, 0.5), prompt(3.0, 1.5), prompt(1.0, 0.25)]
    out = summarise(prompts, "luvc@0.5", "none@1")
    assert out["speedup_llm_prefill"] == pytest.approx(2.0)
    assert out["speedup_ttft"] == pytest.approx(2.0)
    assert out["llm_prefill_s"] == pytest.approx(0.55)  # median of 0.55, 1.65, 0.275
    assert summarise(prompts, "none@1", "none@1")["speedup_ttft"] == 1.0


def test_no_timed_prompts_give_nulls():
    assert set(summarise([], "luvc@0.5", "none@1").values()) == {None}


def test_flops_ideal_is_taken_on_the_timed_prompts():
    # a budget that follows the input: the prompts keep different counts, so their FLOP ratios differ
    prompts = [prompt(1.0, 0.5), prompt(1.0, 0.5), prompt(1.0, 0.5)]
    for p, fast in zip(prompts, (40.0, 25.0, 20.0), strict=True):
        p["none@1"]["flops_llm"], p["luvc@0.5"]["flops_llm"] = 100.0, fast
    assert summarise(prompts, "luvc@0.5", "none@1")["flops_ideal_speedup"] == pytest.approx(4.0)  # of 2.5, 4, 5


def test_timings_stored_without_flops_leave_the_profiled_ideal_in_place():
    prompts = [prompt(1.0, 0.5)]
    assert summarise(prompts, "luvc@0.5", "none@1")["flops_ideal_speedup"] is None
    setting, profiled = Setting("luvc", 0.5), {k: 0 for k in PROFILE_KEYS}
    profiled["flops_llm"] = 50.0
    baseline = {**profiled, "flops_llm": 100.0}
    row = build_row(setting, {}, None, None, profiled, baseline, prompts)
    assert row["flops_ideal_speedup"] == 2.0
    prompts[0]["none@1"]["flops_llm"], prompts[0]["luvc@0.5"]["flops_llm"] = 100.0, 30.0
    row = build_row(setting, {}, None, None, profiled, baseline, prompts)
    assert row["flops_ideal_speedup"] == pytest.approx(3.3333)
