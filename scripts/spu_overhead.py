"""How much of a compressed LLM prefill the SPU scoring takes, per cascade shape (bundled VLM, one mosaic).

    python scripts/spu_overhead.py

Wraps the plan's score() with a timer; prints the LLM prefill time (median of 6 after a warm-up), the scoring
time per forward, the number of pruning events and the speedup over the uncompressed prefill.
"""

import statistics
import time

import torch

import tokenfunnel
from tokenfunnel.bench.prefill import llm_timer
from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import prompt_positions

RUNS = 7


def main() -> None:
    model, processor = tokenfunnel.load_bundled(quiet=True)
    item = easyvqa.load_set("easyvqa-grid", 1, seed=1)[0]
    batch = processor([item.image], [item.question])

    def prefill() -> float:
        with llm_timer(model.model.language_model) as seconds:
            for _ in range(RUNS):
                model(**batch, position_ids=prompt_positions(batch["attention_mask"]))
        return statistics.median(seconds[1:])

    with torch.no_grad():
        base = prefill()
        print("uncompressed", round(base, 4))
        for options in ({}, {"shape": "step"}, {"spectrum": "channel"}):
            with tokenfunnel.compress(model, "luvc", keep=0.25, **options) as handle:
                plan, spent = handle._runtime.plan, []
                score = plan.score

                def timed(inputs, score=score, spent=spent):
                    started = time.perf_counter()
                    out = score(inputs)
                    spent.append(time.perf_counter() - started)
                    return out

                plan.score = timed
                seconds = prefill()
            print(
                options,
                "prefill",
                round(seconds, 4),
                "scoring per forward",
                round(sum(spent) / RUNS, 4),
                "prunes",
                len(spent) // RUNS,
                "speedup",
                round(base / seconds, 3),
            )


if __name__ == "__main__":
    main()
