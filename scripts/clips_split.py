"""Split a finished easyvqa-clips sweep by what each question asks about: the main picture or the last one.

    python scripts/clips_split.py runs/bench-clips --out benchmarks/easyvqa-clips/split.json

Reads the answers the sweep saved (its progress folder) and the clips it ran on (same samples and seed), and gives,
per method, accuracy on the questions about the main picture, on the "last picture" questions, and agreement with
the uncompressed model's answers. A "last picture" question is lost when its frames are folded into the main
picture's, so this is where a frame threshold that is too low shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenfunnel.bench.data import load_items
from tokenfunnel.bench.settings import Setting
from tokenfunnel.bench.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the --out folder of a finished `tokenfunnel bench` on easyvqa-clips")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = json.loads((args.sweep / "results.json").read_text())
    config = results["config"]
    if config["dataset"] != "easyvqa-clips":
        parser.error(f"{args.sweep} is a sweep of {config['dataset']}, not easyvqa-clips")
    items = load_items("easyvqa-clips", config["samples"], config["seed"])
    store = Store(args.sweep, {})
    settings = [Setting(r["method"], r["keep"]) for r in results["rows"]]
    saved = {s.id: store.saved_accuracy(s) for s in settings}
    missing = [name for name, found in saved.items() if found is None]
    if missing:
        parser.error(f"{args.sweep} holds no saved answers for {', '.join(missing)}; rerun the sweep")
    reference = saved[Setting("none", 1.0).id]["answers"]
    last = ["last picture" in item.question.lower() for item in items]
    rows = []
    for name, found in saved.items():
        answers = found["answers"]
        right = [a == item.answer for a, item in zip(answers, items, strict=True)]
        rows.append(
            {
                "setting": name,
                "main": _share(r for r, is_last in zip(right, last, strict=True) if not is_last),
                "last": _share(r for r, is_last in zip(right, last, strict=True) if is_last),
                "agreement": _share(a == b for a, b in zip(answers, reference, strict=True)),
                "questions": [len(last) - sum(last), sum(last)],
            }
        )
        print(json.dumps(rows[-1]))
    if args.out:
        args.out.write_text(json.dumps({"sweep": config, "rows": rows}, indent=1) + "\n")


def _share(hits) -> float:
    hits = list(hits)
    return round(sum(hits) / len(hits), 4) if hits else float("nan")


if __name__ == "__main__":
    main()
