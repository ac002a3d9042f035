"""The paired accuracy margin of one saved set of answers over another on the same questions.

    python scripts/answer_gain.py benchmarks/luvc_confirm_grid/luvc-focus@0.25.json \
        "benchmarks/luvc_confirm_grid/before_frozen_context/luvc-focus@0.25.json" --samples 600 --seed 1

Each file is a bench sweep's saved accuracy part (``bench-progress/accuracy/<setting>.json``: ``answers`` in question
order); the truth is the dataset draw both answered.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenfunnel.bench.accuracy import paired_difference
from tokenfunnel.data.easyvqa import load_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path)
    parser.add_argument("old", type=Path)
    parser.add_argument("--dataset", default="easyvqa-grid")
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    truth = [s.answer for s in load_set(args.dataset, args.samples, args.seed)]
    new, old = (json.loads(p.read_text())["answers"] for p in (args.new, args.old))
    if not len(new) == len(old) == len(truth):
        raise SystemExit(f"{len(new)} and {len(old)} answers for {len(truth)} questions: use the draw both answered")
    hits = [[a == t for a, t in zip(answers, truth, strict=True)] for answers in (new, old)]
    margin, se = paired_difference(*hits)
    changed = sum(a != b for a, b in zip(new, old, strict=True))
    accuracy = [round(sum(h) / len(h), 4) for h in hits]
    out = {"accuracy": accuracy, "points": round(100 * margin, 1), "se": round(100 * se, 1), "changed": changed}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
