"""Closed-set accuracy of one setting on one rank's share of the questions, and the merge of all shares."""

from __future__ import annotations

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
    out: dict = {"index": [], "answer": [], "correct": [], "kind": []}
    try:
        with setting.applied(bench.model):
            for start in range(0, len(indices), batch_size):
                chunk = [items[i] for i in indices[start : start + batch_size]]
                images, questions = [easyvqa.model_input(s) for s in chunk], [s.question for s in chunk]
                guesses = predict(bench.model, bench.processor, images, questions, candidates)
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
    return {
        "samples": len(rows),
        "accuracy": round(sum(hits) / len(hits), 4),
        "accuracy_by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_kind.items())},
        "answers": [answer for _, answer, _, _ in rows],
    }
