"""Where a compressed setting's answers part from the uncompressed model's, on the rows of ``luvc_ablation.py``.

    python scripts/answer_flips.py ROWS.json [ROWS.json ...] [--against VARIANT] [--margins] [--out F]

For each row that saved its answers (files measured on the same questions, with the same uncompressed answers):
its accuracy and its margin to uncompressed with the paired standard error, and to the row ``--against`` names;
then, against the uncompressed answers, per question kind and per
named tile, how many questions both answer right, how many the compressed setting loses (uncompressed right, it
wrong), gains, and both miss; for the lost shape and colour questions, whether the wrong answer is what another tile
of the mosaic shows. ``--margins`` also runs the uncompressed model once more (~8 min for 800 questions on 2 CPU
cores) for how sure it was of the answers a setting loses: the gap in log-probability between its first and second
answer, lost questions against those kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from tokenfunnel.bench.accuracy import paired_difference
from tokenfunnel.data import easyvqa

OUTCOMES = ("kept", "lost", "gained", "both wrong")


def outcome(truth: str, reference: str, got: str) -> str:
    return OUTCOMES[2 * (reference != truth) + (got != truth)]


def other_tiles(sample: easyvqa.Sample, split: str) -> set[str]:
    """What the other tiles of ``sample``'s mosaic show, for its question's kind (shape or colour)."""
    looks = easyvqa.looks_of(split)
    which = 0 if sample.kind == "shape" else 1
    named = easyvqa.TILES.index(sample.tile)
    return {looks[i][which] for slot, i in enumerate(sample.image_ids) if slot != named and i in looks}


def flips(items: list[easyvqa.Sample], reference: list[str], got: list[str], split: str) -> dict:
    by_kind, by_tile, elsewhere = Counter(), Counter(), Counter()
    for sample, ref, answer in zip(items, reference, got, strict=True):
        result = outcome(sample.answer, ref, answer)
        by_kind[sample.kind, result] += 1
        by_tile[sample.tile, result] += 1
        if result == "lost" and sample.kind != "yes/no":
            elsewhere[answer in other_tiles(sample, split)] += 1
    return {
        "by_kind": {k: {o: by_kind[k, o] for o in OUTCOMES} for k in easyvqa.KINDS},
        "by_tile": {t: {o: by_tile[t, o] for o in OUTCOMES} for t in easyvqa.TILES},
        "lost_answer_shown_by_another_tile": {"yes": elsewhere[True], "no": elsewhere[False]},
    }


def confidence(items: list[easyvqa.Sample], batch: int = 8) -> tuple[list[float], list[str]]:
    """The uncompressed model's gap between its first and second answer (log-probability) on each question, and
    its answers."""
    import torch

    import tokenfunnel
    from tokenfunnel.eval.scoring import answer_logprobs

    model, processor = tokenfunnel.load_bundled(quiet=True)
    gaps, answers, names = [], [], easyvqa.answers()
    with torch.no_grad():
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            lp = answer_logprobs(model, processor, [s.image for s in chunk], [s.question for s in chunk], names)
            top = lp.topk(2, dim=-1)
            gaps += (top.values[:, 0] - top.values[:, 1]).tolist()
            answers += [names[i] for i in top.indices[:, 0].tolist()]
    return gaps, answers


def margin_summary(items, reference: list[str], got: list[str], gaps: list[float]) -> dict:
    groups: dict[str, list[float]] = {"kept": [], "lost": []}
    for sample, ref, answer, gap in zip(items, reference, got, gaps, strict=True):
        result = outcome(sample.answer, ref, answer)
        if sample.kind != "yes/no" and result in groups:
            groups[result].append(gap)
    return {
        k: {"questions": len(v), "median_gap": round(statistics.median(v), 2) if v else None} for k, v in groups.items()
    }


def paired(a: list[bool], b: list[bool]) -> dict:
    diff, se = paired_difference(a, b)
    return {"points": round(100 * diff, 1), "se": round(100 * se, 1)}


def load_rows(files: list[Path]) -> tuple[dict, list[dict]]:
    """The first file's header and every file's rows that saved answers; refused where the questions differ."""
    first, rows = None, []
    for path in files:
        done = json.loads(path.read_text())
        what = {k: done.get(k) for k in ("dataset", "samples", "weights", "reference")}
        what["seed"] = done.get("seed", 0)  # files from before --seed drew seed 0
        if first is None:
            first = what
        elif what != first:
            raise SystemExit(f"{path} was measured on other questions or weights than {files[0]}: compare like rows")
        rows += [r for r in done["rows"] if "answers" in r]
    return first, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, nargs="+", help="output files of scripts/luvc_ablation.py")
    parser.add_argument("--against", help="also each row's margin to this row (its variant name)")
    parser.add_argument("--margins", action="store_true", help="also how sure the uncompressed model was (runs it)")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    done, rows = load_rows(args.rows)
    if done["dataset"] != "easyvqa-grid-dev":
        parser.error(f"{args.rows[0]} holds {done['dataset']} rows; tiles are only named on easyvqa-grid-dev")
    if not rows:
        parser.error("no row of the given files saved its answers: measure again with scripts/luvc_ablation.py")
    items = easyvqa.load_set(done["dataset"], done["samples"], done["seed"])
    reference = done["reference"]

    def right(answers: list[str]) -> list[bool]:
        return [a == s.answer for a, s in zip(answers, items, strict=True)]

    base = right(reference)
    against = None
    if args.against:
        named = [r for r in rows if r["variant"] == args.against]
        if len(named) != 1:
            parser.error(f"--against {args.against!r} names {len(named)} rows of the given files; give one variant")
        against = right(named[0]["answers"])
    gaps = None
    if args.margins:
        gaps, again = confidence(items)
        if again != reference:
            parser.error(f"the uncompressed model no longer gives the answers {args.rows[0]} saved: other weights?")
    out = []
    for row in rows:
        hits = right(row["answers"])
        entry = {
            "variant": row["variant"],
            "keep": row["keep"],
            "accuracy": round(sum(hits) / len(items), 4),
            "vs_uncompressed": paired(hits, base),
        }
        if against is not None:
            entry["vs_" + args.against] = paired(hits, against)
        entry |= flips(items, reference, row["answers"], "train")
        if gaps is not None:
            entry["uncompressed_gap"] = margin_summary(items, reference, row["answers"], gaps)
        out.append(entry)
        print(json.dumps(entry))
    if args.out:
        sources = [str(p) for p in args.rows]
        args.out.write_text(json.dumps({"rows_files": sources, "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
