"""Prefill time of the bundled VLM's language model alone against the number of tokens fed to it.

    python scripts/lm_token_cost.py

Shows the fixed per-prefill cost that no token pruning can remove on this small model (random inputs_embeds,
median of 6 runs after a warm-up, batch 1, fp32).
"""

import statistics
import time

import torch

import tokenfunnel


def main() -> None:
    model, _ = tokenfunnel.load_bundled(quiet=True)
    lm = model.model.language_model
    with torch.no_grad():
        for tokens in (320, 256, 190, 128, 96, 64, 32):
            x = torch.randn(1, tokens, lm.config.hidden_size)
            seconds = []
            for _ in range(7):
                started = time.perf_counter()
                lm(inputs_embeds=x, use_cache=True)
                seconds.append(time.perf_counter() - started)
            print(tokens, round(statistics.median(seconds[1:]), 4))


if __name__ == "__main__":
    main()
