"""Medians and speedups from interleaved per-prompt timings."""

import pytest

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
