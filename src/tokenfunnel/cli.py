"""The `tokenfunnel` command: build, demo, eval."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Progressive visual-token compression for VLMs.")
err = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> None:
    """One clear line on stderr and a non-zero exit: bad input never ends in a traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _load(quiet: bool):
    from tokenfunnel.models.bundled import load_bundled
    from tokenfunnel.models.errors import BundledModelError

    try:
        return load_bundled(quiet=quiet)
    except BundledModelError as error:
        fail(str(error))


def _read_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        fail(f"image not found: {path} (pass an existing image file with --image)")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        fail(f"cannot read {path} as an image ({error.__class__.__name__}): pass a PNG or JPEG file with --image")


@app.command()
def build(force: bool = typer.Option(False, "--force", help="Rebuild even if the cache looks complete.")) -> None:
    """Convert the pretrained parts of the bundled VLM into the cache (done automatically on first use)."""
    from tokenfunnel.models.bundled import build_cache
    from tokenfunnel.models.errors import BundledModelError

    try:
        folder = build_cache(force=force)
    except BundledModelError as error:
        fail(str(error))
    typer.echo(f"bundled VLM cache: {folder}")


def _default_cases() -> list[tuple[str, object, str]]:
    from PIL import Image
    from skimage import data as photos

    from tokenfunnel.data import easyvqa

    grid = easyvqa.grid_set(1, seed=3)[0]
    astronaut = Image.fromarray(photos.astronaut())
    return [
        ("easy-VQA 2x2 mosaic (test split)", grid.image, grid.question),
        ("scikit-image astronaut photo", astronaut, "What color is the shape?"),
    ]


def _answer(model, processor, image, question: str, max_new_tokens: int = 8) -> dict:
    import torch

    from tokenfunnel.eval.scoring import prompt_positions

    batch = processor([image], [question])
    with torch.no_grad():
        started = time.perf_counter()
        model(**batch, position_ids=prompt_positions(batch["attention_mask"]))
        prefill_s = time.perf_counter() - started
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    answer = processor.decode(out[0, batch["input_ids"].shape[1] :])
    visual = int((batch["input_ids"] == processor.image_token_id).sum())
    return {"answer": answer, "visual_tokens": visual, "prefill_s": round(prefill_s, 4)}


@app.command()
def demo(
    image: Path | None = typer.Option(None, "--image", help="An image file to ask about (default: built-in cases)."),
    question: str | None = typer.Option(None, "--question", help="The question to ask about --image."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Answer questions with the bundled VLM, showing the visual token count and prefill time."""
    if question is not None and not question.strip():
        fail("the question is empty: pass a non-empty --question")
    if image is not None:
        cases = [(str(image), _read_image(image), question or "What color is the shape?")]
    elif question is not None:
        cases = [(label, picture, question) for label, picture, _ in _default_cases()]
    else:
        cases = _default_cases()
    model, processor = _load(quiet=as_json)
    results = []
    for label, picture, text in cases:
        results.append({"image": label, "question": text, "uncompressed": _answer(model, processor, picture, text)})
    if as_json:
        typer.echo(json.dumps({"uncompressed": results[0]["uncompressed"], "cases": results}))
        return
    table = Table(title="tokenfunnel demo — bundled VLM (DINOv2-S + SmolLM2-135M)")
    for column in ("image", "question", "answer", "visual tokens", "prefill (s)"):
        table.add_column(column)
    for row in results:
        out = row["uncompressed"]
        cells = (row["image"], row["question"], out["answer"], str(out["visual_tokens"]), f"{out['prefill_s']:.3f}")
        table.add_row(*cells)
    Console().print(table)


@app.command("eval")
def evaluate(
    dataset: str = typer.Option(..., "--dataset", help="easyvqa or easyvqa-grid."),
    samples: int = typer.Option(300, "--samples", help="Number of test questions."),
    seed: int = typer.Option(0, "--seed", help="Seed that draws the questions (and mosaics)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print the result rows as JSON."),
) -> None:
    """Closed-set accuracy of the bundled VLM on an easy-VQA test set."""
    from tokenfunnel.data.easyvqa import DATASETS

    if dataset not in DATASETS:
        fail(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if samples <= 0:
        fail(f"--samples must be a positive number of questions, got {samples}")
    if batch_size <= 0:
        fail(f"--batch-size must be positive, got {batch_size}")
    from rich.progress import Progress

    from tokenfunnel.eval.runner import evaluate as run_eval

    model, processor = _load(quiet=as_json)
    with Progress(console=err, disable=as_json, transient=True) as progress:
        task = progress.add_task(f"evaluating on {dataset}", total=samples)
        row = run_eval(model, processor, dataset, samples, seed, batch_size, lambda n: progress.advance(task, n))
    if as_json:
        typer.echo(json.dumps({"rows": [row]}))
        return
    table = Table(title=f"{dataset}: {row['samples']} questions (seed {seed})")
    for column in ("method", "keep", "accuracy", "by kind", "seconds"):
        table.add_column(column)
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in row["accuracy_by_kind"].items())
    table.add_row(row["method"], f"{row['keep']:.2f}", f"{row['accuracy']:.4f}", kinds, str(row["seconds"]))
    Console().print(table)


def main() -> None:
    app()
