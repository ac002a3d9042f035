"""One result row per setting, from the stored parts (accuracy, profile, timed prompts) of a sweep."""

from __future__ import annotations

from tokenfunnel.bench.settings import NONE, Setting
from tokenfunnel.bench.timing import summarise

# Every row has these keys, in this order (CSV columns; measurements are null where a setting was refused).
COLUMNS = (
    "model",
    "method",
    "keep",
    "dataset",
    "samples",
    "seed",
    "layers",
    "accuracy",
    "accuracy_by_kind",
    "realised_keep",
    "encoder_keep",
    "visual_tokens",
    "original_visual_tokens",
    "text_tokens",
    "llm_visual_tokens",
    "encoder_tokens",
    "vision_s",
    "llm_prefill_s",
    "ttft_s",
    "decode_tok_s",
    "kv_cache_bytes",
    "peak_mem_bytes",
    "flops_vision",
    "flops_llm",
    "speedup_llm_prefill",
    "speedup_ttft",
    "flops_ideal_speedup",
    "overhead_s",
    "overhead_frac",
    "timing_prompts",
    "repeats",
    "threads",
    "device",
    "dtype",
    "error",
)
PROFILE_KEYS = (
    "realised_keep",
    "encoder_keep",
    "visual_tokens",
    "original_visual_tokens",
    "text_tokens",
    "llm_visual_tokens",
    "encoder_tokens",
    "decode_tok_s",
    "kv_cache_bytes",
    "peak_mem_bytes",
    "flops_vision",
    "flops_llm",
)


def _round(value, digits: int):
    return None if value is None else round(value, digits)


def build_row(
    setting: Setting,
    common: dict,
    error: str | None,
    accuracy: dict | None,
    profile: dict | None,
    baseline: dict | None,
    timed: list[dict],
) -> dict:
    """The row of ``setting``. ``common`` holds the sweep-wide fields (model, dataset, seed, threads, ...);
    ``timed`` the timed prompts (empty when timing was skipped); ``baseline`` the uncompressed profile."""
    row = dict.fromkeys(COLUMNS)
    row.update(common)
    row.update(method=setting.method, keep=setting.keep, error=error)
    if error is not None:
        return row
    if accuracy is not None:
        row.update(accuracy=accuracy["accuracy"], accuracy_by_kind=accuracy["accuracy_by_kind"])
    if profile is not None:
        row.update({k: profile[k] for k in PROFILE_KEYS})
        row["decode_tok_s"] = _round(row["decode_tok_s"], 3)
        if baseline is not None:
            row["flops_ideal_speedup"] = round(baseline["flops_llm"] / profile["flops_llm"], 4)
    if accuracy is not None and accuracy.get("mean_keep") is not None:
        # the mean over every question, not the one profiled prompt: budgets that follow the input or the question
        # (difficulty, detail) differ per question; for the others the two agree. FLOPs, memory and decode rate
        # stay those of the profiled prompt.
        row.update(realised_keep=accuracy["mean_keep"], visual_tokens=accuracy["mean_visual_tokens"])
    if timed:
        times = summarise(timed, setting.id, NONE.id)
        for name in ("vision_s", "llm_prefill_s", "ttft_s", "overhead_s"):
            row[name] = _round(times[name], 6)
        row["speedup_llm_prefill"] = _round(times["speedup_llm_prefill"], 4)
        row["speedup_ttft"] = _round(times["speedup_ttft"], 4)
        if times["flops_ideal_speedup"] is not None:  # taken on the timed prompts, like the speedups beside it
            row["flops_ideal_speedup"] = round(times["flops_ideal_speedup"], 4)
        row["overhead_frac"] = _round(times["overhead_s"] / times["ttft_s"], 4)
    row["timing_prompts"] = len(timed)
    return row
