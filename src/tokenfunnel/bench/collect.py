"""Gather published sweeps into one results.json: ``python -m tokenfunnel.bench.collect RUN_FOLDER INTO_FOLDER``.

A ``tokenfunnel bench`` folder holds one sweep (one model, one dataset). The folder a project publishes holds
several: each collected sweep's rows replace the rows of the same model and dataset, the others stay, and each
sweep keeps its own config, machine, versions and commit under ``runs``. results.csv and results.md are rewritten
from the union (one table per sweep in results.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenfunnel.bench import report

PROVENANCE = ("config", "machine", "versions", "commit")


def _key(item: dict) -> tuple[str, str]:
    """The (model, dataset) pair a sweep's config or one of its rows is about."""
    return item["model"], item["dataset"]


def as_collection(data: dict) -> dict:
    """``data`` as {"rows", "runs"}: a single sweep's results.json becomes a collection of one."""
    if "runs" in data:
        return data
    if "config" not in data or "rows" not in data:
        raise ValueError("not a tokenfunnel bench results.json (no rows and config): pass a bench --out folder")
    return {"rows": data["rows"], "runs": [{k: data.get(k) for k in PROVENANCE}]}


def collect(sweep: dict, into: dict | None) -> dict:
    """``into``'s sweeps of other (model, dataset) pairs, and ``sweep`` in place of its own pair's (or after them)."""
    if "runs" in sweep:
        raise ValueError("collect takes one sweep (a tokenfunnel bench --out folder), not a collection")
    new = as_collection(sweep)
    key = _key(sweep["config"])
    old = as_collection(into) if into is not None else {"rows": [], "runs": []}
    keys = [_key(r["config"]) for r in old["runs"]]
    runs = [new["runs"][0] if k == key else r for k, r in zip(keys, old["runs"], strict=True)]
    if key not in keys:
        runs.append(new["runs"][0])
    rows = [row for row in old["rows"] if _key(row) != key] + new["rows"]
    order = {_key(r["config"]): i for i, r in enumerate(runs)}
    rows.sort(key=lambda row: order[_key(row)])  # stable: a sweep's rows keep their order
    return {"rows": rows, "runs": runs}


def markdown(collection: dict) -> str:
    parts = []
    for run in collection["runs"]:
        rows = [r for r in collection["rows"] if _key(r) == _key(run["config"])]
        parts.append(report.to_markdown(rows, run["config"]))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a tokenfunnel bench --out folder")
    parser.add_argument("into", type=Path, help="the folder whose results.json gathers the sweeps")
    args = parser.parse_args(argv)
    source = args.run / "results.json"
    if not source.exists():
        parser.error(f"{source} does not exist: run tokenfunnel bench --out {args.run} first")
    target = args.into / "results.json"
    into = json.loads(target.read_text()) if target.exists() else None
    try:
        collection = collect(json.loads(source.read_text()), into)
    except ValueError as error:
        parser.error(str(error))
    for path in report.write(args.into, collection, markdown(collection)):
        print(path)


if __name__ == "__main__":
    main()
