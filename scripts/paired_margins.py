"""Every setting of a finished accuracy sweep against uncompressed, and chosen pairs against each other, with paired
standard errors (both rows answered the same questions).

    python scripts/paired_margins.py runs/confirm-luvc-grid --pairs luvc-focus:luvc --out F

Reads the sweep's ``results.json`` and each setting's saved answers (``bench-progress/accuracy/<setting>.json``, or
those files copied beside ``results.json``, as ``make confirm-luvc-grid`` keeps them in ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenfunnel.bench.accuracy import paired_difference
from tokenfunnel.bench.settings import Setting
from tokenfunnel.data.easyvqa import load_set


def saved_answers(folder: Path, setting: Setting) -> list[str]:
    for place in (folder / "bench-progress" / "accuracy", folder):
        path = place / f"{setting.id}.json"
        if path.exists():
            return json.loads(path.read_text())["answers"]
    raise SystemExit(f"no saved answers for {setting.id} in {folder}: run the sweep (make confirm-luvc-grid) first")


def margin(a: list[bool], b: list[bool]) -> dict:
    diff, se = paired_difference(a, b)
    return {"margin": round(diff, 4), "se": round(se, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a sweep's --out folder (or its copy in benchmarks/)")
    parser.add_argument("--pairs", nargs="*", default=[], help="METHOD_A:METHOD_B, compared at every keep both ran")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    result = json.loads((args.folder / "results.json").read_text())
    config = result["config"]
    truth = [s.answer for s in load_set(config["dataset"], config["samples"], config["seed"])]
    base = saved_answers(args.folder, Setting("none", 1.0))
    base_hits = [a == t for a, t in zip(base, truth, strict=True)]
    right = {}
    rows = []
    for row in result["rows"]:
        setting = Setting(row["method"], row["keep"])
        answers = base if setting.baseline else saved_answers(args.folder, setting)
        hits = right[setting.id] = [a == t for a, t in zip(answers, truth, strict=True)]
        if abs(sum(hits) / len(hits) - row["accuracy"]) > 1e-4:
            raise SystemExit(f"the answers saved for {setting.id} do not score its accuracy in results.json")
        rows.append(
            {
                "setting": setting.id,
                "accuracy": round(sum(hits) / len(hits), 4),
                "of_uncompressed": round(sum(hits) / sum(base_hits), 4),
                "agreement": round(sum(a == b for a, b in zip(answers, base, strict=True)) / len(base), 4),
                "vs_uncompressed": None if setting.baseline else margin(hits, base_hits),
            }
        )
    pairs = []
    for pair in args.pairs:
        a, b = pair.split(":")
        for keep in config["keeps"]:
            ida, idb = Setting(a, keep).id, Setting(b, keep).id
            if ida in right and idb in right:
                pairs.append({"pair": f"{ida} - {idb}", **margin(right[ida], right[idb])})
    out = {"dataset": config["dataset"], "samples": config["samples"], "seed": config["seed"], "rows": rows}
    out["pairs"] = pairs
    for r in rows:
        m = r["vs_uncompressed"]
        against = "" if m is None else f"  {100 * m['margin']:+.1f} ± {100 * m['se']:.1f} points"
        print(f"{r['setting']:>18}: {r['accuracy']:.3f} ({100 * r['of_uncompressed']:.1f}%){against}")
    for p in pairs:
        print(f"{p['pair']}: {100 * p['margin']:+.1f} ± {100 * p['se']:.1f} points")
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
