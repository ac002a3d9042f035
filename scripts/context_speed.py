"""What frozen context costs in LLM prefill time on the bundled VLM: `luvc-focus` with and without it, interleaved.

    python scripts/context_speed.py --samples 4 --repeats 6 --out benchmarks/frozen_context/speed_bundled.json

Test mosaics of `make bench` (seed 0; timing only). For each prompt the uncompressed model, `luvc-focus` with
``context="none"`` and with its default frozen context run one after another, each the median of --repeats prefills
after one warm-up; the figures are medians over prompts. fp32, batch 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import tokenfunnel
from tokenfunnel.bench.models import OnDevice
from tokenfunnel.bench.prefill import llm_timer
from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import prompt_positions


def timed(model, batch: dict, repeats: int) -> float:
    with torch.no_grad(), llm_timer(model.model.language_model) as seconds:
        for _ in range(repeats + 1):
            model(**batch, position_ids=prompt_positions(batch["attention_mask"]))
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.25, 0.11])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = tokenfunnel.load_bundled(quiet=True)
    items = easyvqa.load_set("easyvqa-grid", args.samples, seed=0)
    batches = [OnDevice(processor, "cpu", torch.float32)([item.image], [item.question]) for item in items]
    rows = []
    for keep in args.keep:
        times: dict[str, list[float]] = {"uncompressed": [], "none": [], "frozen": []}
        for batch in batches:
            times["uncompressed"].append(timed(model, batch, args.repeats))
            for context in ("none", "frozen"):
                options = dict(keep=keep, tokenizer=processor.tokenizer, context=context)
                with tokenfunnel.compress(model, "luvc-focus", **options):
                    times[context].append(timed(model, batch, args.repeats))
        ms = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
        ratio = statistics.median(f / n for f, n in zip(times["frozen"], times["none"], strict=True))
        rows.append({"keep": keep, "llm_prefill_ms": ms, "frozen_over_none": round(ratio, 3)})
        print(json.dumps(rows[-1]), flush=True)
    out = {"samples": args.samples, "repeats": args.repeats, "threads": args.threads, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
