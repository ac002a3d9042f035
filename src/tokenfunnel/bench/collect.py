"""Gather published sweeps into one results.json: ``python -m tokenfunnel.bench.collect RUN_FOLDER INTO_FOLDER
[--name NAME]``.

A ``tokenfunnel bench`` folder holds one sweep (one model, one dataset). The folder a project publishes holds
several: each collected sweep's rows replace the rows of the same model, dataset and name, the others stay, and each
sweep keeps its own config, machine, versions and commit under ``runs``. The name tells apart two sweeps of one
model and dataset (e.g. every method on single images, and the adaptive methods on the same set): a named sweep's
run carries ``name`` and its rows ``sweep``. results.csv and results.md are rewritten from the union (one table per
sweep in results.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenfunnel.bench import report

PROVENANCE = ("config", "machine", "versions", "commit")


def _row_key(row: dict) -> tuple[str, str, str]:
    """(model, dataset, sweep name) of a row."""
    return row["model"], row["dataset"], row.get("sweep", "")


def _run_key(run: dict) -> tuple[str, str, str]:
    """(model, dataset, sweep name) of a collected run."""
    return run["config"]["model"], run["config"]["dataset"], run.get("name", "")


def as_collection(data: dict) -> dict:
    """``data`` as {"rows", "runs"}: a single sweep's results.json becomes a collection of one."""
    if "runs" in data:
        return data
    if "config" not in data or "rows" not in data:
        raise ValueError("not a tokenfunnel bench results.json (no rows and config): pass a bench --out folder")
    return {"rows": data["rows"], "runs": [{k: data.get(k) for k in PROVENANCE}]}


def collect(sweep: dict, into: dict | None, name: str = "") -> dict:
    """``into``'s other sweeps, and ``sweep`` (named ``name``) in place of the one of its model, dataset and name
    (or after them)."""
    if "runs" in sweep:
        raise ValueError("collect takes one sweep (a tokenfunnel bench --out folder), not a collection")
    new = as_collection(sweep)
    if name:
        new = {"rows": [{**row, "sweep": name} for row in new["rows"]], "runs": [{**new["runs"][0], "name": name}]}
    key = _run_key(new["runs"][0])
    old = as_collection(into) if into is not None else {"rows": [], "runs": []}
    keys = [_run_key(r) for r in old["runs"]]
    runs = [new["runs"][0] if k == key else r for k, r in zip(keys, old["runs"], strict=True)]
    if key not in keys:
        runs.append(new["runs"][0])
    rows = [row for row in old["rows"] if _row_key(row) != key] + new["rows"]
    order = {_run_key(r): i for i, r in enumerate(runs)}
    rows.sort(key=lambda row: order[_row_key(row)])  # stable: a sweep's rows keep their order
    return {"rows": rows, "runs": runs}


def markdown(collection: dict) -> str:
    parts = []
    for run in collection["runs"]:
        rows = [r for r in collection["rows"] if _row_key(r) == _run_key(run)]
        title = f"{run['name']} sweep: " if run.get("name") else ""
        parts.append(title + report.to_markdown(rows, run["config"]))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a tokenfunnel bench --out folder")
    parser.add_argument("into", type=Path, help="the folder whose results.json gathers the sweeps")
    parser.add_argument("--name", default="", help="tells this sweep apart from another of the same model and dataset")
    args = parser.parse_args(argv)
    source = args.run / "results.json"
    if not source.exists():
        parser.error(f"{source} does not exist: run tokenfunnel bench --out {args.run} first")
    target = args.into / "results.json"
    into = json.loads(target.read_text()) if target.exists() else None
    try:
        collection = collect(json.loads(source.read_text()), into, args.name)
    except ValueError as error:
        parser.error(str(error))
    for path in report.write(args.into, collection, markdown(collection)):
        print(path)


if __name__ == "__main__":
    main()
