"""Each adaptive method against fixed LUVC at the same realised mean keep, from ``make bench-adaptive``'s sweeps.

    python scripts/adaptive_table.py --runs runs/adaptive --fill --out benchmarks/adaptive

For every sweep folder under ``--runs`` (one per dataset): its result files are copied to ``--out/<dataset>/``.
With ``--fill``, LUVC is then run (same folder, same configuration, so the uncompressed model and finished parts
are reused) at every realised keep of a method whose budget follows the input or lands away from the keep asked
(``difficulty``; ``detail`` without details), rounded to 3 decimals. The table pairs each adaptive row with the
LUVC row at its realised keep, and gives agreement with the uncompressed model's answers and, on
``easyvqa-mixed``, accuracy on tile questions (even indices) and whole-mosaic questions (odd ones) apart, and
``luvc-focus`` (LUVC with the question's named part first) where the sweep ran it at the same keep. Each margin
comes with its paired standard error: both rows answered the same questions, so it is the spread of the
per-question difference in correctness over the square root of their number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tokenfunnel.bench.accuracy import paired_se
from tokenfunnel.bench.settings import Setting
from tokenfunnel.bench.store import Store
from tokenfunnel.data.easyvqa import load_set

ADAPTIVE = ("lod", "detail", "learned", "difficulty")
FILL = "luvc_fill.json"
SWEEP_FILES = ("results.json", "results.csv", "results.md", "pareto.png")
TOLERANCE = 0.005  # realised keeps this close to a LUVC row's count as the same keep


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def setting_id(method: str, keep: float | None) -> str:
    return Setting(method, keep).id


def key(row: dict) -> str:
    """The setting id of a row or entry (its method and the keep asked)."""
    return setting_id(row["method"], row["keep"])


def answers(folder: Path, method: str, keep: float | None) -> dict | None:
    """The answers a sweep in ``folder`` saved for one setting (its progress store), or None."""
    return Store(folder, {}).saved_accuracy(Setting(method, keep))


def fill(folder: Path, config: dict, keeps: list[float]) -> list[dict]:
    """LUVC rows at ``keeps`` from a bench run into the same folder (reusing its finished parts); the sweep's own
    result files, which that run rewrites with these rows only, are put back afterwards."""
    command = [
        *(sys.executable, "-m", "tokenfunnel", "bench"),
        *("--model", config["model"], "--dataset", config["dataset"], "--methods", "luvc"),
        *("--keep", ",".join(f"{k:g}" for k in keeps), "--samples", str(config["samples"])),
        *("--seed", str(config["seed"]), "--timing-samples", str(config["timing_samples"])),
        *("--repeats", str(config["repeats"]), "--threads", str(config["threads"])),
        *("--batch-size", str(config["batch_size"]), "--out", str(folder)),
    ]
    saved = {name: (folder / name).read_bytes() for name in SWEEP_FILES if (folder / name).exists()}
    try:
        subprocess.run(command, check=True)
        return read(folder / "results.json")["rows"]
    finally:
        for name, data in saved.items():
            (folder / name).write_bytes(data)


def scored(rows: list[dict], folder: Path, truth: list[str], mixed: bool) -> tuple[dict, dict]:
    """Per row id: accuracy, realised keep, agreement with none, and (``mixed`` set) accuracy on tile /
    whole-mosaic questions; and per row id, which questions it answered as ``truth`` says."""
    base = answers(folder, "none", 1.0)
    out, hits = {}, {}
    for row in rows:
        if row.get("error"):
            continue
        got = answers(folder, row["method"], row["keep"])
        entry = {
            "method": row["method"],
            "keep": row["keep"],
            "realised_keep": row.get("realised_keep", 1.0) if row["method"] != "none" else 1.0,
            "visual_tokens": row.get("visual_tokens"),
            "accuracy": row["accuracy"],
            "speedup_llm_prefill": row.get("speedup_llm_prefill"),
        }
        if got is not None:
            right = [a == t for a, t in zip(got["answers"], truth, strict=True)]
            if abs(sum(right) / len(right) - row["accuracy"]) > 1e-3:
                raise SystemExit(f"{folder}: the saved answers of {row['method']} do not score its accuracy; rerun it")
            hits[key(row)] = right
            if base is not None:
                mine, theirs = got["answers"], base["answers"]
                entry["agreement"] = round(sum(a == b for a, b in zip(mine, theirs, strict=True)) / len(mine), 4)
                if mixed:
                    for scope, parity in (("tile", 0), ("whole", 1)):
                        part = right[parity::2]
                        entry[f"accuracy_{scope}"] = round(sum(part) / len(part), 4)
        out[key(row)] = entry
    return out, hits


def nearest_luvc(entries: dict, keep: float, method: str = "luvc") -> dict | None:
    luvc = [e for e in entries.values() if e["method"] == method]
    best = min(luvc, key=lambda e: abs(e["realised_keep"] - keep), default=None)
    return best if best is not None and abs(best["realised_keep"] - keep) <= TOLERANCE else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/adaptive"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/adaptive"))
    parser.add_argument("--fill", action="store_true", help="run LUVC at the realised keeps that have no LUVC row")
    args = parser.parse_args()
    summary = {}
    for folder in sorted(p for p in args.runs.iterdir() if (p / "results.json").exists()):
        kept = args.out / folder.name
        kept.mkdir(parents=True, exist_ok=True)
        for name in SWEEP_FILES:
            if (folder / name).exists():
                shutil.copy(folder / name, kept / name)
        result = read(kept / "results.json")
        rows, config = result["rows"], result["config"]
        mixed = config["dataset"].startswith("easyvqa-mixed")
        truth = [s.answer for s in load_set(config["dataset"], config["samples"], config["seed"])]
        entries, hits = scored(rows, folder, truth, mixed)
        wanted = sorted(
            {round(e["realised_keep"], 3) for e in entries.values() if e["method"] in ADAPTIVE}
            - {round(e["realised_keep"], 3) for e in entries.values() if e["method"] == "luvc"}
        )
        wanted = [k for k in wanted if nearest_luvc(entries, k) is None]
        if args.fill and wanted:
            extra = [r for r in fill(folder, config, wanted) if r["method"] == "luvc"]
            (folder / FILL).write_text(json.dumps(extra, indent=1) + "\n")
        if (folder / FILL).exists():  # beside the sweep it was measured with, never an older sweep's
            shutil.copy(folder / FILL, kept / FILL)
            more, more_hits = scored(read(folder / FILL), folder, truth, mixed)
            entries.update(more)
            hits.update(more_hits)
        pairs = []
        for e in entries.values():
            if e["method"] not in ADAPTIVE:
                continue
            luvc = nearest_luvc(entries, e["realised_keep"])
            focus = nearest_luvc(entries, e["realised_keep"], "luvc-focus")  # only where the sweep ran that keep
            se = None if luvc is None else paired_se(hits.get(key(e)), hits.get(key(luvc)))
            pairs.append(
                {
                    **e,
                    "luvc_keep": None if luvc is None else luvc["realised_keep"],
                    "luvc_accuracy": None if luvc is None else luvc["accuracy"],
                    "margin": None if luvc is None else round(e["accuracy"] - luvc["accuracy"], 4),
                    "margin_se": None if se is None else round(se, 4),
                    "luvc_focus_accuracy": None if focus is None else focus["accuracy"],
                    **(
                        {"luvc_tile": luvc.get("accuracy_tile"), "luvc_whole": luvc.get("accuracy_whole")}
                        if mixed and luvc is not None
                        else {}
                    ),
                }
            )
        summary[config["dataset"]] = {
            "samples": config["samples"],
            "seed": config["seed"],
            "rows": list(entries.values()),
            "pairs": pairs,
            "refused": {key(r): r["error"] for r in rows if r.get("error")},
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))


def markdown(summary: dict) -> str:
    lines = []
    for dataset, part in summary.items():
        lines += [f"### {dataset} ({part['samples']} test questions, seed {part['seed']})", ""]
        none = next(e for e in part["rows"] if e["method"] == "none")
        lines += [f"uncompressed: accuracy {none['accuracy']:.3f}", ""]
        lines += [
            "| method | keep asked | realised keep | accuracy | agreement | LUVC at that keep | margin ± paired SE "
            "| luvc-focus at that keep |"
        ]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for p in part["pairs"]:
            asked = "follows input" if p["keep"] is None else f"{p['keep']:g}"
            luvc = "—" if p["luvc_accuracy"] is None else f"{p['luvc_accuracy']:.3f} (keep {p['luvc_keep']:.3f})"
            margin = "—" if p["margin"] is None else f"{p['margin']:+.3f}"
            if p.get("margin_se") is not None:
                margin += f" ± {p['margin_se']:.3f}"
            focus = "—" if p.get("luvc_focus_accuracy") is None else f"{p['luvc_focus_accuracy']:.3f}"
            acc = f"{p['accuracy']:.3f}"
            if "accuracy_tile" in p:
                acc += f" (tile {p['accuracy_tile']:.2f} / whole {p['accuracy_whole']:.2f})"
                if p.get("luvc_tile") is not None:
                    luvc += f" (tile {p['luvc_tile']:.2f} / whole {p['luvc_whole']:.2f})"
            lines += [
                f"| {p['method']} | {asked} | {p['realised_keep']:.3f} | {acc} | {p.get('agreement', '—')} | "
                f"{luvc} | {margin} | {focus} |"
            ]
        lines += [f"- refused: `{name}`: {why}" for name, why in part["refused"].items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
