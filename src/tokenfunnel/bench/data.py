"""The question sets a benchmark can run on: easy-VQA test sets, and dev sets for choosing hyper-parameters.

``easyvqa``/``easyvqa-grid``/``easyvqa-mixed``/``easyvqa-clips`` come from the test split. Their ``-dev`` twins come
from easy-VQA *training* images that the bundled VLM's training never showed (``models.train.dev_image_ids``):
settings are chosen there, and the test split only reports them.
"""

from __future__ import annotations

from tokenfunnel.bench.errors import BenchError
from tokenfunnel.data import easyvqa

DATASETS = tuple(name + suffix for suffix in ("", "-dev") for name in easyvqa.DATASETS)


def _source(name: str) -> tuple[str, tuple[int, ...] | None]:
    return ("train", easyvqa.dev_ids()) if name.endswith("-dev") else ("test", None)


def capacity(name: str) -> int | None:
    """How many questions the set can hold; ``None`` when unbounded (mosaics and clips are drawn with replacement)."""
    if "grid" in name or "mixed" in name or "clips" in name:
        return None
    split, ids = _source(name)
    allowed = None if ids is None else set(ids)
    counts = [
        sum(1 for q in easyvqa.questions(split) if q.kind == k and (allowed is None or q.image_id in allowed))
        for k in easyvqa.KINDS
    ]
    # single_set draws kinds in turn: question 3q + j is the q-th of kind j, so kind j runs out at 3 * count + j
    return min(3 * count + j for j, count in enumerate(counts))


def check(name: str, samples: int) -> None:
    """A clear BenchError for an unknown set or more questions than it holds, before anything is loaded."""
    if name not in DATASETS:
        raise BenchError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if samples <= 0:
        raise BenchError(f"--samples must be a positive number of questions, got {samples}")
    most = capacity(name)
    if most is not None and samples > most:
        raise BenchError(f"--samples {samples} is more than {name} holds ({most} balanced questions)")


def load_items(name: str, samples: int, seed: int) -> list[easyvqa.Sample]:
    """The ``samples`` questions of set ``name`` drawn with ``seed`` (the same on every rank)."""
    check(name, samples)
    try:
        return easyvqa.load_set(name, samples, seed)
    except (IndexError, ValueError) as error:
        raise BenchError(f"cannot draw {samples} questions from {name}: {error}") from None
