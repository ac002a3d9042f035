"""Closed-set accuracy of one setting on one rank's share of the questions, and the merge of all shares."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

from tokenfunnel.bench.models import BenchModel
from tokenfunnel.bench.settings import Setting
from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import predict


def shard(count: int, rank: int, world: int) -> list[int]:
    """Question indices of ``rank``: every ``world``-th, so each rank gets a like mix of question kinds."""
    return list(range(rank, count, world))


def score_shard(
    bench: BenchModel,
    setting: Setting,
    items: list[easyvqa.Sample],
    indices: list[int],
    batch_size: int,
    step: Callable[[int], None] | None = None,
) -> dict:
    """``{"index": [...], "answer": [...], "correct": [...], "kind": [...]}`` for the questions at ``indices``;
    ``{"error": message}`` when the method refuses the setting (a ValueError) once it sees the model's input."""
    candidates = easyvqa.answers()
    out: dict = {"index": [], "answer": [], "correct": [], "kind": [], "keep": [], "visual": []}
    try:
        with setting.applied(bench.model, bench.processor) as handle:
            for start in range(0, len(indices), batch_size):
                chunk = [items[i] for i in indices[start : start + batch_size]]
                images, questions = [easyvqa.model_input(s) for s in chunk], [s.question for s in chunk]
                guesses = predict(bench.model, bench.processor, images, questions, candidates)
                keeps, visual = _realised(handle, len(chunk))
                out["keep"] += keeps
                out["visual"] += visual
                for i, sample, guess in zip(indices[start:], chunk, guesses, strict=False):
                    out["index"].append(i)
                    out["answer"].append(guess)
                    out["correct"].append(guess == sample.answer)
                    out["kind"].append(sample.kind)
                if step is not None:
                    step(len(chunk))
    except ValueError as error:
        return {"error": str(error)}
    return out


def _realised(handle, count: int) -> tuple[list, list]:
    """Per question: the realised keep and the visual tokens entering the LLM (None for the uncompressed model).
    Methods whose budget follows the input differ per question, so their rows report the mean over all of them."""
    if handle is None:
        return [None] * count, [None] * count
    report = handle.report()
    keeps = report.get("keep_per_sample", [report["keep"]] * count)
    visual = report["visual_tokens"]
    return keeps, visual if isinstance(visual, list) else [visual] * count


def merge(parts: list[dict]) -> dict:
    """One setting's result from every rank's share: answers in question order, accuracy overall and by kind."""
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        return {"error": errors[0]}
    rows = sorted(row for p in parts for row in zip(p["index"], p["answer"], p["correct"], p["kind"], strict=True))
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for _, _, correct, kind in rows:
        by_kind[kind].append(correct)
    hits = [correct for _, _, correct, _ in rows]
    out = {
        "samples": len(rows),
        "accuracy": round(sum(hits) / len(hits), 4),
        "accuracy_by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_kind.items())},
        "answers": [answer for _, answer, _, _ in rows],
    }
    keeps = [k for p in parts for k in p.get("keep", []) if k is not None]
    visual = [v for p in parts for v in p.get("visual", []) if v is not None]
    if keeps:  # the mean over every question (parts stored before these were recorded have none)
        out["mean_keep"] = round(sum(keeps) / len(keeps), 6)
        out["mean_visual_tokens"] = round(sum(visual) / len(visual), 2)
    return out


def paired_se(a: list[bool] | None, b: list[bool] | None) -> float | None:
    """Standard error of mean(a) - mean(b) over the same questions (None without both answer lists)."""
    if a is None or b is None or len(a) < 2:
        return None
    d = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    mean = sum(d) / len(d)
    return math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))


def paired_difference(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """mean(a) - mean(b) over the same questions, and its standard error."""
    if len(a) < 2:
        raise ValueError(f"a paired difference needs at least 2 questions, got {len(a)}: score more samples")
    return (sum(a) - sum(b)) / len(a), paired_se(a, b)
