"""Choose LUVC's defaults on the dev split (easy-VQA training images the bundled VLM never saw), never on test.

    python scripts/luvc_ablation.py --samples 180 --out benchmarks/luvc_ablation.json
    python scripts/luvc_ablation.py --dataset easyvqa-dev --samples 180 --out benchmarks/luvc_ablation_single.json

Each row: one LUVC option changed from the defaults at one keep, its accuracy on dev mosaics (or single images) and
its agreement with the uncompressed model's answers on the same questions (a paired, less noisy signal); baseline
rows (random by default) put the variants in context on the same questions; a method whose budget follows the input
(difficulty) is measured once, with keep null and its realised keep. Resumable:
rows already in the output file are skipped, provided it was measured on the same set and weights (else refused).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import tokenfunnel
from tokenfunnel.bench.models import fingerprint
from tokenfunnel.bench.settings import Setting, resolved_options
from tokenfunnel.cli import option_value
from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import predict
from tokenfunnel.methods.registry import processor_options, takes_keep

# Each variant changes options of the first design (the defaults until the v2 single-image ablation), so rows
# measured before the defaults changed still mean what their names say; "current defaults" is LUVC as it ships.
FIRST_DESIGN = {
    "spectrum": "2d",
    "grid_keep": None,
    "shape": "linear",
    "final_zero": True,
    "stage": "llm",
    "contextual": 0.0,
}
CURRENT = "current defaults"
VARIANTS: dict[str, dict] = {
    "first design": {},
    "spectrum=1d": {"spectrum": "1d"},
    "spectrum=channel": {"spectrum": "channel"},
    "prefer=low": {"prefer": "low"},
    "cutoff=0.25": {"cutoff": 0.25},
    "cutoff=0.75": {"cutoff": 0.75},
    "normed=False": {"normed": False},
    "grid_keep=1 (SPU only)": {"grid_keep": 1.0},
    "proportional=True": {"proportional": True},
    "encoder_start=0": {"encoder_start": 0.0},
    "shape=geometric": {"shape": "geometric"},
    "shape=step": {"shape": "step"},
    "start=4": {"start": 4},
    "start=8": {"start": 8},
    "grid_keep=0.35": {"grid_keep": 0.35},
    "grid_keep=0.75": {"grid_keep": 0.75},
    "grid_keep=0.35, start=4": {"grid_keep": 0.35, "start": 4},
    "every=3": {"every": 3},
    "cutoff=0.05 (DC only: distance from the image mean)": {"cutoff": 0.05},
    "spectrum=1d, grid_keep=1": {"spectrum": "1d", "grid_keep": 1.0},
    "shape=flat": {"shape": "flat"},
    "shape=flat, spectrum=1d": {"shape": "flat", "spectrum": "1d"},
    "shape=flat, spectrum=1d, grid_keep=1": {"shape": "flat", "spectrum": "1d", "grid_keep": 1.0},
    "shape=geometric, spectrum=1d": {"shape": "geometric", "spectrum": "1d"},
}
# the same changes from the defaults of sessions 12-21 (flat, 1-D spectrum, no OIM; the drop in the language model
# before its first layer, none in the last), named "defaults, ..." in the rows
DEFAULTS = {"shape": "flat", "spectrum": "1d", "grid_keep": 1.0}
VARIANTS |= {
    "defaults, contextual=0.15": {**DEFAULTS, "contextual": 0.15},
    "defaults, contextual=0.3": {**DEFAULTS, "contextual": 0.3},
    "defaults, start=2": {**DEFAULTS, "start": 2},
    "defaults, start=2, contextual=0.15": {**DEFAULTS, "start": 2, "contextual": 0.15},
    "defaults, cutoff=0.05": {**DEFAULTS, "cutoff": 0.05},
    "defaults, cutoff=0.25": {**DEFAULTS, "cutoff": 0.25},
    "defaults, coverage=0.5": {**DEFAULTS, "coverage": 0.5},
    "defaults, coverage=1": {**DEFAULTS, "coverage": 1.0},
    "defaults, coverage=1, cutoff=0.05": {**DEFAULTS, "coverage": 1.0, "cutoff": 0.05},
    "defaults, final_zero=False": {**DEFAULTS, "final_zero": False},
    "defaults, stage=encoder": {**DEFAULTS, "stage": "encoder"},
    "defaults, stage=encoder, contextual=10/64": {**DEFAULTS, "stage": "encoder", "contextual": 10 / 64},
    "defaults, stage=encoder, contextual=10/64, final_zero=False": {
        **DEFAULTS,
        "stage": "encoder",
        "contextual": 10 / 64,
        "final_zero": False,
    },
    "defaults, contextual=0.15, final_zero=False": {**DEFAULTS, "contextual": 0.15, "final_zero": False},
    "defaults, stage=encoder, final_zero=False": {**DEFAULTS, "stage": "encoder", "final_zero": False},
    "defaults, stage=encoder, contextual=0.3, final_zero=False": {
        **DEFAULTS,
        "stage": "encoder",
        "contextual": 0.3,
        "final_zero": False,
    },
    "defaults, grid_keep=0.5": {**DEFAULTS, "grid_keep": 0.5},
}


def answers(model, processor, items, batch: int) -> list[str]:
    out = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        out += predict(model, processor, [s.image for s in chunk], [s.question for s in chunk], easyvqa.answers())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0, help="another draw of questions, to check a choice made on 0")
    parser.add_argument("--dataset", choices=("easyvqa-grid-dev", "easyvqa-dev"), default="easyvqa-grid-dev")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.25])
    parser.add_argument(
        "--variants", nargs="*", default=[CURRENT, *VARIANTS], choices=[CURRENT, *VARIANTS], metavar="VARIANT"
    )
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=["random"],
        help="other methods measured alongside, as METHOD or METHOD:NAME=VALUE,... (e.g. learned:weights=FILE)",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/luvc_ablation.json"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    what = {"dataset": args.dataset, "samples": args.samples, "seed": args.seed, "weights": fingerprint("bundled")}
    done = json.loads(args.out.read_text()) if args.out.exists() else {"rows": [], **what}
    mine = {k: done.get(k, 0 if k == "seed" else None) for k in what}  # files from before --seed drew seed 0
    if mine != what:
        parser.error(f"{args.out} holds rows of {mine}, not {what}: pass another --out, or delete it to start over")
    measured = {(r["variant"], r["keep"]): r.get("resolved") for r in done["rows"]}
    model, processor = tokenfunnel.load_bundled(quiet=True)
    items = easyvqa.load_set(args.dataset, args.samples, args.seed)
    truth = [s.answer for s in items]
    started = time.perf_counter()
    reference = done.get("reference")  # a resumed run reuses the uncompressed answers it saved
    if reference is None:
        with torch.no_grad():
            reference = answers(model, processor, items, args.batch)
        base = {
            "variant": "uncompressed",
            "keep": 1.0,
            "accuracy": _mean(a == t for a, t in zip(reference, truth, strict=True)),
            "agreement": 1.0,
            "seconds": round(time.perf_counter() - started, 1),
        }
        done["reference"] = reference
        done["rows"] = [r for r in done["rows"] if r["variant"] != "uncompressed"] + [base]
        print(json.dumps(base), flush=True)
    runs = [(name, "luvc", {} if name == CURRENT else {**FIRST_DESIGN, **VARIANTS[name]}) for name in args.variants]
    runs += [(f"baseline: {spec}", *_baseline(spec)) for spec in args.baselines]
    for i, asked in enumerate(args.keep):
        for name, method, options in runs:
            keep = asked if takes_keep(method) else None  # a budget that follows the input: measured once
            if keep is None and i > 0:
                continue
            resolved = resolved_options(Setting(method, keep), processor, options)
            if measured.get((name, keep)) == resolved:
                continue
            # a row measured under other options (the defaults changed) is measured again, not kept
            done["rows"] = [r for r in done["rows"] if (r["variant"], r["keep"]) != (name, keep)]
            started = time.perf_counter()
            given = {**processor_options(method, processor), **options}  # the tokenizer for methods reading it
            with torch.no_grad(), tokenfunnel.compress(model, method, keep=keep, **given) as handle:
                got = answers(model, processor, items, args.batch)
                realised = handle.report()["keep"]
            row = {
                "variant": name,
                "method": method,
                "keep": keep,
                "options": options,
                "resolved": resolved,
                "realised_keep": realised,
                "accuracy": _mean(a == t for a, t in zip(got, truth, strict=True)),
                "agreement": _mean(a == r for a, r in zip(got, reference, strict=True)),
                "seconds": round(time.perf_counter() - started, 1),
                "answers": got,  # with the saved reference: paired standard errors between any two rows
            }
            done["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "answers"}), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(done, indent=1) + "\n")


def _baseline(spec: str) -> tuple[str, dict]:
    """Split a spec like "fastv:layer=6" into ("fastv", {"layer": 6}); values read as JSON, else text, as --option."""
    method, _, options = spec.partition(":")
    pairs = [kv.split("=", 1) for kv in options.split(",") if kv]
    if any(len(kv) != 2 for kv in pairs):
        raise SystemExit(f"--baselines {spec!r}: options go as METHOD:NAME=VALUE,NAME=VALUE")
    return method, {name: option_value(text) for name, text in pairs}


def _mean(hits) -> float:
    hits = list(hits)
    return round(sum(hits) / len(hits), 4)


if __name__ == "__main__":
    main()
