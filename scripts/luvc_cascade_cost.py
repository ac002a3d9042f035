"""Which half of LUVC's first design cost accuracy on single images: its spectral score or its falling cascade?

    python scripts/luvc_cascade_cost.py --samples 180 --out benchmarks/luvc_cascade_cost.jsonl   (~10 min, 2 cores)

Crosses the two on the dev split (easy-VQA training images the bundled VLM never saw), keep 0.25, without OIM:
{LUVC's spectral score, a random score} x {one drop before the first layer held to the end, the linear cascade
falling to zero}. Agreement is measured against the uncompressed answers on the same questions.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from luvc_ablation import answers  # this folder: run as python scripts/luvc_cascade_cost.py

import tokenfunnel
from tokenfunnel.data import easyvqa
from tokenfunnel.methods import registry
from tokenfunnel.methods.luvc import LUVC, LUVCConfig
from tokenfunnel.methods.random_drop import RandomConfig, RandomDrop
from tokenfunnel.runtime.state import ScoreInput

KEEP = 0.25


@dataclass(frozen=True)
class RandomScoreConfig(LUVCConfig):
    """LUVC's schedule with a random score (the same draw per cell for every image, as the random baseline)."""


class RandomScore(LUVC):
    def score(self, inputs: ScoreInput) -> torch.Tensor:
        return RandomDrop(RandomConfig()).score(inputs)


SCHEDULES = {"one drop, held": dict(shape="flat", final_zero=False), "linear cascade to zero": dict(shape="linear")}
SCORES = {"spectral (1d)": ("luvc", dict(spectrum="1d")), "spectral (2d)": ("luvc", dict(spectrum="2d"))}
SCORES["random"] = ("luvc-random-score", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=180)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    registry.METHODS["luvc-random-score"] = (RandomScoreConfig, RandomScore)
    model, processor = tokenfunnel.load_bundled(quiet=True)
    items = easyvqa.load_set("easyvqa-dev", args.samples, 0)
    truth = [s.answer for s in items]
    with torch.no_grad():
        reference = answers(model, processor, items, 8)
    lines = [{"score": "none (uncompressed)", "schedule": None, "accuracy": _share(reference, truth)}]
    print(json.dumps(lines[0]), flush=True)
    for score, (method, options) in SCORES.items():
        for schedule, shape in SCHEDULES.items():
            chosen = dict(keep=KEEP, grid_keep=1.0, **options, **shape)
            with torch.no_grad(), tokenfunnel.compress(model, method, **chosen) as handle:
                got = answers(model, processor, items, 8)
                realised = handle.report()["keep"]
            line = {"score": score, "schedule": schedule, "keep": KEEP, "realised_keep": realised}
            line |= {"accuracy": _share(got, truth), "agreement": _share(got, reference)}
            print(json.dumps(line), flush=True)
            lines.append(line)
    args.out.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _share(got: list[str], want: list[str]) -> float:
    return round(sum(a == b for a, b in zip(got, want, strict=True)) / len(want), 4)


if __name__ == "__main__":
    main()
