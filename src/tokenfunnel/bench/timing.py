"""Prefill timings that hold up on a noisy shared machine.

For one prompt, every setting runs in turn (none, A, B, ...: interleaved, so drift between them cancels); each
gets one warm-up prefill and then ``repeats`` timed ones, batch 1. One prefill yields four times at once:
``vision_s`` (the vision tower's forward), ``llm_prefill_s`` (the language model's forward), ``ttft_s`` (the whole
model on the prompt up to the first token: vision, projector, LM, LM head, argmax) and ``overhead_s`` (the parts
of it that were tokenfunnel's own work, from ``runtime.clock.overhead``). On CUDA every clock read synchronises.
Each setting also records the analytic LLM FLOPs of the prompt as it ran, so the FLOP-ideal speedup is taken on
the very prompts that were timed (budgets that follow the input or the question differ from prompt to prompt).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from tokenfunnel.bench.models import BenchModel
from tokenfunnel.bench.prefill import llm_timer
from tokenfunnel.bench.settings import Setting
from tokenfunnel.runtime.clock import overhead

FIELDS = ("vision_s", "llm_prefill_s", "ttft_s", "overhead_s")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def prefill(bench: BenchModel, batch: dict):
    """The forward a server runs before the first token: the prompt with a cache, logits at the last position."""
    out = bench.model(**bench.inputs(batch), use_cache=True, logits_to_keep=1)
    out.logits[:, -1].argmax(-1)
    return out


def measure(bench: BenchModel, batch: dict) -> dict[str, float]:
    """The four times of one prefill, in seconds."""
    with (
        llm_timer(bench.adapter.vision_tower) as vision,
        llm_timer(bench.adapter.text_model) as llm,
        overhead() as ours,
    ):
        sync(bench.device)
        started = time.perf_counter()
        prefill(bench, batch)
        sync(bench.device)
        ttft = time.perf_counter() - started
    return {
        "vision_s": float(sum(vision)),
        "llm_prefill_s": float(sum(llm)),
        "ttft_s": ttft,
        "overhead_s": float(sum(ours)),
    }


def time_prompt(
    bench: BenchModel, batch: dict, settings: list[Setting], repeats: int, step: Callable[[], None] | None = None
) -> dict[str, dict[str, list[float] | float]]:
    """``{setting id: {field: [seconds of each timed repeat], "flops_llm": FLOPs}}`` for one prompt, settings
    interleaved."""
    text, visual = bench.prompt_tokens(batch)
    out = {}
    for setting in settings:
        with setting.applied(bench.model, bench.processor) as handle:
            measure(bench, batch)  # warm-up: caches, allocator, lazy initialisation
            runs = [measure(bench, batch) for _ in range(repeats)]
            report = handle.report() if handle is not None else {}
            tokens = bench.llm_tokens(report, visual)
        out[setting.id] = {name: [run[name] for run in runs] for name in FIELDS}
        out[setting.id]["flops_llm"] = bench.llm_flops(report, text, tokens)
        if step is not None:
            step()
    return out


def summarise(per_prompt: list[dict[str, dict[str, list[float] | float]]], setting: str, baseline: str) -> dict:
    """Medians over prompts of each prompt's median over repeats, and speedups: the median over prompts of the
    per-prompt ratio baseline / setting (so a prompt that ran during a slow spell on the machine still compares
    like with like). ``flops_ideal_speedup`` is the median over the same prompts of their FLOP ratios (None for
    timings stored before FLOPs were recorded)."""
    if not per_prompt:
        return dict.fromkeys((*FIELDS, "speedup_llm_prefill", "speedup_ttft", "flops_ideal_speedup"))
    medians = [{k: statistics.median(prompt[setting][k]) for k in FIELDS} for prompt in per_prompt]
    base = [{k: statistics.median(prompt[baseline][k]) for k in FIELDS} for prompt in per_prompt]
    out = {name: statistics.median(m[name] for m in medians) for name in FIELDS}
    for name, field in (("speedup_llm_prefill", "llm_prefill_s"), ("speedup_ttft", "ttft_s")):
        out[name] = statistics.median(b[field] / m[field] for b, m in zip(base, medians, strict=True))
    flops = [(prompt[baseline].get("flops_llm"), prompt[setting].get("flops_llm")) for prompt in per_prompt]
    known = all(b is not None and s is not None for b, s in flops)
    out["flops_ideal_speedup"] = statistics.median(b / s for b, s in flops) if known else None
    return out
