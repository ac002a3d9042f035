"""Accuracy of a model on an easy-VQA set, as one result row (the row shape benchmarks extend)."""

from __future__ import annotations

import time
from collections import defaultdict

from tokenfunnel.data import easyvqa
from tokenfunnel.eval.scoring import predict


def evaluate(
    model,
    processor,
    dataset: str,
    samples: int,
    seed: int = 0,
    batch_size: int = 8,
    progress=None,
    method: str = "none",
    keep: float = 1.0,
    options: dict | None = None,
) -> dict:
    """`{"method", "keep", "dataset", "samples", "accuracy", ...}`; ``method="none"`` is the uncompressed model;
    ``options`` are the method's (a row with options says which)."""
    items = easyvqa.load_set(dataset, samples, seed)
    if method == "none":
        return {**evaluate_samples(model, processor, items, dataset, batch_size, progress), "seed": seed}
    import tokenfunnel
    from tokenfunnel.methods.registry import processor_options

    options = options or {}
    with tokenfunnel.compress(model, method, keep=keep, **processor_options(method, processor), **options) as handle:
        row = evaluate_samples(model, processor, items, dataset, batch_size, progress, handle)
    return {**row, "method": method, "keep": keep, "seed": seed, **({"options": options} if options else {})}


def evaluate_samples(model, processor, items, dataset: str, batch_size: int = 8, progress=None, handle=None) -> dict:
    """Accuracy over ``items``; with the ``handle`` of a compressed model, also the realised keep averaged over
    every question (methods whose budget follows the input realise a different keep per question)."""
    candidates = easyvqa.answers()
    keeps: list[float] = []
    started = time.perf_counter()
    correct: dict[str, list[bool]] = defaultdict(list)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images, questions = [easyvqa.model_input(s) for s in chunk], [s.question for s in chunk]
        guesses = predict(model, processor, images, questions, candidates)
        for sample, guess in zip(chunk, guesses, strict=True):
            correct[sample.kind].append(guess == sample.answer)
        if handle is not None:
            report = handle.report()
            keeps += report.get("keep_per_sample", [report["keep"]] * len(chunk))
        if progress is not None:
            progress(len(chunk))
    hits = [hit for kind in correct.values() for hit in kind]
    return {
        "method": "none",
        "keep": 1.0,
        "dataset": dataset,
        "samples": len(items),
        "accuracy": round(sum(hits) / len(hits), 4),
        "accuracy_by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(correct.items())},
        "seconds": round(time.perf_counter() - started, 1),
        **({"realised_keep": round(sum(keeps) / len(keeps), 6)} if keeps else {}),
    }
