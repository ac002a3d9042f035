"""The paired accuracy margin of one saved set of answers over another on the same questions.

    python scripts/answer_gain.py benchmarks/luvc_confirm_grid/luvc-focus@0.25.json \
        "benchmarks/luvc_confirm_grid/before_frozen_context/luvc-focus@0.25.json" --samples 600 --seed 1

Each file is a bench sweep's saved accuracy part (``bench-progress/accuracy/<setting>.json``: ``answers`` in question
order); the truth is the dataset draw both answered. Several draws pool into one margin: give the files of each
draw comma-separated, in the order of ``--samples`` and ``--seed`` (``NEW0,NEW1 OLD0,OLD1 --samples 300 600 --seed
0 1``); the draws must not share questions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenfunnel.bench.accuracy import paired_difference
from tokenfunnel.data.easyvqa import load_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", help="answers file(s), comma-separated for several draws")
    parser.add_argument("old", help="the other answers file(s), in the same order")
    parser.add_argument("--dataset", default="easyvqa-grid")
    parser.add_argument("--samples", type=int, nargs="+", required=True)
    parser.add_argument("--seed", type=int, nargs="+", required=True)
    args = parser.parse_args()
    news, olds = args.new.split(","), args.old.split(",")
    if not len(news) == len(olds) == len(args.samples) == len(args.seed):
        raise SystemExit("give one new file, one old file, one --samples and one --seed per draw")
    hits: list[list[bool]] = [[], []]
    kinds: list[str] = []
    changed, seen = 0, set()
    for new_path, old_path, samples, seed in zip(news, olds, args.samples, args.seed, strict=True):
        draw = load_set(args.dataset, samples, seed)
        keys = {(s.question, tuple(s.image_ids)) for s in draw}
        if keys & seen:
            raise SystemExit(f"the draw of {samples} questions with seed {seed} shares questions with an earlier one")
        seen |= keys
        truth = [s.answer for s in draw]
        kinds += [s.kind for s in draw]
        new, old = (json.loads(Path(p).read_text())["answers"] for p in (new_path, old_path))
        if not len(new) == len(old) == len(truth):
            raise SystemExit(f"{len(new)} and {len(old)} answers for {len(truth)} questions: use the draw both took")
        for i, answers in enumerate((new, old)):
            hits[i] += [a == t for a, t in zip(answers, truth, strict=True)]
        changed += sum(a != b for a, b in zip(new, old, strict=True))
    margin, se = paired_difference(*hits)
    accuracy = [round(sum(h) / len(h), 4) for h in hits]
    out = {"questions": len(hits[0]), "accuracy": accuracy, "points": round(100 * margin, 1), "se": round(100 * se, 1)}
    out["changed"] = changed
    out["by_kind"] = {  # accuracy of each set of answers per kind of question
        kind: [round(sum(h for h, k in zip(hs, kinds, strict=True) if k == kind) / kinds.count(kind), 4) for hs in hits]
        for kind in sorted(set(kinds))
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
