"""The files a sweep leaves: results.json (rows + machine, versions, commit, config), results.csv, results.md."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from tokenfunnel.bench.provenance import commit, machine, versions
from tokenfunnel.bench.rows import COLUMNS


def results(rows: list[dict], config: dict) -> dict:
    return {
        "rows": rows,
        "machine": machine(config["device"], config["threads"]),
        "versions": versions(),
        "commit": commit(),
        "config": config,
    }


def to_csv(rows: list[dict]) -> str:
    """One line per row; lists and dicts (per-layer tokens, accuracy by kind) as JSON in their cell. A collection
    with named sweeps (``bench.collect --name``) gets a first column ``sweep``."""
    buffer = io.StringIO()
    columns = ("sweep", *COLUMNS) if any("sweep" in row for row in rows) else COLUMNS
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()})
    return buffer.getvalue()


def _cell(value, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) or scale != 1.0:
        return f"{value / scale:.{digits}f}{suffix}"
    return str(value)


def to_markdown(rows: list[dict], config: dict) -> str:
    """A table for the README: the measured quantities per setting, refusals with their reason."""
    header = (
        "| method | keep | realised keep | accuracy | visual tokens | LLM prefill (ms) | LLM speedup | TTFT (ms) "
        "| TTFT speedup | FLOP-ideal speedup | decode tok/s | KV cache (MB) | peak mem (MB) | overhead |"
    )
    lines = [
        f"tokenfunnel bench: model {config['model']}, dataset {config['dataset']}, {config['samples']} questions, "
        f"seed {config['seed']}, timing on {config['timing_samples']} prompts x {config['repeats']} repeats, "
        f"{config['threads']} threads, {config['device']}, {config.get('dtype', 'float32')}",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {row['method']} | {_asked(row['keep'])} | refused: {row['error']} |" + " |" * 11)
            continue
        cells = (
            row["method"],
            _asked(row["keep"]),
            _cell(row["realised_keep"]),
            _cell(row["accuracy"]),
            _count(row["visual_tokens"]),
            _cell(row["llm_prefill_s"], 1, 1e-3),
            _cell(row["speedup_llm_prefill"], 2, suffix="x"),
            _cell(row["ttft_s"], 1, 1e-3),
            _cell(row["speedup_ttft"], 2, suffix="x"),
            _cell(row["flops_ideal_speedup"], 2, suffix="x"),
            _cell(row["decode_tok_s"], 1),
            _cell(row["kv_cache_bytes"], 2, 1e6),
            _cell(row["peak_mem_bytes"], 1, 1e6),
            _cell(None if row["overhead_frac"] is None else 100 * row["overhead_frac"], 1, suffix="%"),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(out: Path, data: dict, markdown: str | None = None) -> list[Path]:
    """results.json, results.csv and results.md (``markdown``, else one table of ``data``) in ``out``, each
    replaced whole; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "results.json": json.dumps(data, indent=1) + "\n",
        "results.csv": to_csv(data["rows"]),
        "results.md": to_markdown(data["rows"], data["config"]) if markdown is None else markdown,
    }
    paths = []
    for name, text in texts.items():
        path = out / name
        temporary = path.with_name(f".{name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
        paths.append(path)
    return paths


def _count(value: float | None) -> str:
    """A token count: whole when it is (a mean over questions that all agree), else to one decimal."""
    if value is None:
        return "—"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _asked(keep: float | None) -> str:
    return "follows input" if keep is None else f"{keep:g}"
