"""Fit difficulty's signal weights on the dev split and compare them with the design's starting weights.

    python scripts/fit_difficulty.py --samples 120 --out benchmarks/difficulty_fit.json

Dev questions only (easy-VQA training images the bundled VLM never saw): ``--samples`` each from easyvqa-dev,
easyvqa-grid-dev and easyvqa-mixed-dev. Steps:

1. The uncompressed answer of every question, and its answer with every sample forced into each tier in turn
   (the tier's budget, the same reduction and cascade as ``difficulty``): a question "needs" the lowest tier whose
   answer equals the uncompressed one (the last tier when none does).
2. Its signals (edges, colour variance, objects, length, negation, counting, reasoning), as ``difficulty`` reads them.
3. Non-negative least squares from the signals (and a constant) to the midpoint of the needed tier's difficulty
   interval: the fitted weights (``Weights(mix=(1, 1), image=..., question=..., bias=...)``, the same formula).
4. ``difficulty`` with the design's weights and with the fitted ones, and LUVC at each one's realised mean keep:
   accuracy and agreement with the uncompressed answers. The better weights are the ones whose accuracy beats
   LUVC's at equal keep by more (ties: the design's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

import tokenfunnel
from tokenfunnel.bench.data import load_items
from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import predict
from tokenfunnel.methods.difficulty import DifficultyConfig
from tokenfunnel.ops.difficulty import Weights

SETS = ("easyvqa-dev", "easyvqa-grid-dev", "easyvqa-mixed-dev")
SIGNALS = ("edges", "colour", "objects", "length", "negation", "counting", "reasoning")


def features(signals: dict, w: Weights) -> list[float]:
    """The seven signals as ``ops.difficulty.difficulty`` weighs them (objects and length capped the same way)."""
    s = dict(signals)
    s["objects"] = min(1.0, s["objects"] / w.objects_full)
    s["length"] = min(1.0, s["length"] / w.words_full)
    return [float(s[k]) for k in SIGNALS]


def answers(model, processor, items, config, batch: int) -> tuple[list[str], list[float], list[dict]]:
    """Answers, realised keep and ``report()["stage"]`` entries per question (keep 1.0 / {} for ``None``)."""
    out, keeps, stages = [], [], []
    candidates = easyvqa.answers()
    handle = tokenfunnel.compress(model, config) if config is not None else None
    try:
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            images, questions = [easyvqa.model_input(s) for s in chunk], [s.question for s in chunk]
            out += predict(model, processor, images, questions, candidates)
            if handle is None:
                keeps += [1.0] * len(chunk)
                stages += [{}] * len(chunk)
                continue
            report = handle.report()
            keeps += report.get("keep_per_sample", [report["keep"]] * len(chunk))
            stage = report.get("stage", {})
            stages += [{key: values[i] for key, values in stage.items()} for i in range(len(chunk))]
    finally:
        if handle is not None:
            handle.remove()
    return out, keeps, stages


def summary(items, got, reference, keeps) -> dict:
    right = [g == s.answer for g, s in zip(got, items, strict=True)]
    agree = [g == r for g, r in zip(got, reference, strict=True)]
    return {
        "accuracy": round(float(np.mean(right)), 4),
        "agreement": round(float(np.mean(agree)), 4),
        "keep": round(float(np.mean(keeps)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=120, help="questions from each dev set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/difficulty_fit.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    model, processor = tokenfunnel.load_bundled()
    tok = processor.tokenizer
    items = [s for name in SETS for s in load_items(name, args.samples, args.seed)]
    names = [name for name in SETS for _ in range(args.samples)]
    design = DifficultyConfig(tokenizer=tok)
    reference, _, _ = answers(model, processor, items, None, args.batch)

    # 1. the lowest tier whose answer matches the uncompressed one
    flat = Weights(mix=(0.0, 0.0))  # every question in the first tier, whose budget is then the tier's
    tiers = []
    for budget in design.budgets:
        forced = DifficultyConfig(tokenizer=tok, weights=flat, budgets=(budget, 573, 574, 575))
        tiers.append(answers(model, processor, items, forced, args.batch)[0])
        print(f"tier budget {budget}: agreement {agreement(tiers[-1], reference):.3f}")
    needed = [
        next((t for t in range(len(tiers)) if tiers[t][i] == reference[i]), len(tiers) - 1) for i in range(len(items))
    ]
    bounds = (0.0, *design.bounds, 1.0)
    target = np.array([(bounds[t] + bounds[t + 1]) / 2 for t in needed])

    # 2-3. signals (read by a run with the design's weights, which also gives its own row) and the fit
    got_design, keeps_design, stages = answers(model, processor, items, design, args.batch)
    x = np.array([features(st["signals"], design.weights) for st in stages])
    # the bias enters as a constant signal of 1; NNLS keeps it >= 0 too (no question is easier than easy)
    coef, residual = nnls(np.hstack([x, np.ones((len(x), 1))]), target)
    coef, bias = coef[:-1].round(4), float(coef[-1].round(4))
    fitted = Weights(mix=(1.0, 1.0), image=tuple(coef[:3]), question=tuple(coef[3:]), bias=bias)
    baseline = float(np.mean((target - target.mean()) ** 2))
    fit_mse = float(np.mean((x @ coef + bias - target) ** 2))
    design_mse = float(np.mean((x @ design_coefficients(design.weights) - target) ** 2))

    # 4. both weightings against LUVC at the same realised keep
    got_fitted, keeps_fitted, stages_fitted = answers(
        model, processor, items, DifficultyConfig(tokenizer=tok, weights=fitted), args.batch
    )
    rows = {}
    for label, got, keeps, st in (
        ("design", got_design, keeps_design, stages),
        ("fitted", got_fitted, keeps_fitted, stages_fitted),
    ):
        keep = round(float(np.mean(keeps)), 4)
        luvc, luvc_keeps, _ = answers(model, processor, items, tokenfunnel.LUVCConfig(keep=keep), args.batch)
        rows[label] = {
            **summary(items, got, reference, keeps),
            "tiers": {t: sum(1 for s in st if s["tier"] == t) for t in ("easy", "medium", "hard", "very hard")},
            "per_set": {
                name: summary(*(only(values, names, name) for values in (items, got, reference, keeps)))
                for name in SETS
            },
            "luvc_same_keep": summary(items, luvc, reference, luvc_keeps),
        }
        rows[label]["margin_over_luvc"] = round(rows[label]["accuracy"] - rows[label]["luvc_same_keep"]["accuracy"], 4)
        print(label, json.dumps(rows[label]))
    better = "fitted" if rows["fitted"]["margin_over_luvc"] > rows["design"]["margin_over_luvc"] else "design"
    result = {
        "command": f"python scripts/fit_difficulty.py --samples {args.samples} --seed {args.seed}",
        "sets": list(SETS),
        "questions": len(items),
        "uncompressed_accuracy": summary(items, reference, reference, [1.0] * len(items))["accuracy"],
        "tier_budgets": list(design.budgets),
        "tier_agreement": [round(agreement(t, reference), 4) for t in tiers],
        "needed_tier_counts": [needed.count(t) for t in range(len(tiers))],
        "signals": list(SIGNALS),
        "fitted_weights": {
            "mix": list(fitted.mix),
            "image": list(fitted.image),
            "question": list(fitted.question),
            "bias": fitted.bias,
        },
        "fit_mse": {"fitted": round(fit_mse, 5), "design": round(design_mse, 5), "constant": round(baseline, 5)},
        "nnls_residual": round(float(residual), 4),
        "rows": rows,
        "better": better,
        "seconds": round(time.time() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("fitted_weights", "fit_mse", "better", "seconds")}))


def agreement(a: list[str], b: list[str]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def only(values: list, names: list[str], name: str) -> list:
    return [v for v, n in zip(values, names, strict=True) if n == name]


def design_coefficients(w: Weights) -> np.ndarray:
    return np.array([w.mix[0] * c for c in w.image] + [w.mix[1] * c for c in w.question])


if __name__ == "__main__":
    main()
