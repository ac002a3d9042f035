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


def _prefill_seconds(model, batch, repeats: int = 3) -> float:
    """Median wall time of one prefill (the first call also warms up)."""
    import statistics

    from tokenfunnel.eval.scoring import prompt_positions

    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        model(**batch, position_ids=prompt_positions(batch["attention_mask"]))
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def _answer(model, processor, image, question: str, max_new_tokens: int = 8) -> dict:
    import torch

    batch = processor([image], [question])
    with torch.no_grad():
        prefill_s = _prefill_seconds(model, batch)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    answer = processor.decode(out[0, batch["input_ids"].shape[1] :])
    visual = int((batch["input_ids"] == processor.image_token_id).sum())
    return {"answer": answer, "visual_tokens": visual, "prefill_s": round(prefill_s, 4)}


def _compressed_answer(model, processor, image, question: str, method: str, keep: float) -> dict:
    import tokenfunnel

    with tokenfunnel.compress(model, method, keep=keep) as handle:
        out = _answer(model, processor, image, question)
        report = handle.report()
    out["visual_tokens"] = report["visual_tokens"]
    out["keep"] = report["keep"]
    out["encoder_keep"] = report.get("encoder_keep", 1.0)
    return out


def _check_method(method: str, keep: float) -> None:
    from tokenfunnel.methods.registry import METHODS

    if method != "none" and method not in METHODS:
        fail(f"unknown method {method!r}: choose one of none, {', '.join(METHODS)}")
    if not 0 < keep <= 1:
        fail(f"--keep must be in (0, 1], got {keep} (e.g. --keep 0.25 keeps a quarter of the visual-token FLOPs)")


@app.command()
def demo(
    image: Path | None = typer.Option(None, "--image", help="An image file to ask about (default: built-in cases)."),
    question: str | None = typer.Option(None, "--question", help="The question to ask about --image."),
    method: str = typer.Option("luvc", "--method", help="Compression method to show beside uncompressed, or none."),
    keep: float = typer.Option(0.25, "--keep", help="FLOP-equivalent fraction of visual tokens to keep."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Answer questions with the bundled VLM, uncompressed and compressed, with token counts and prefill time."""
    _check_method(method, keep)
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
        row = {"image": label, "question": text, "uncompressed": _answer(model, processor, picture, text)}
        if method != "none":
            row["compressed"] = {"method": method, **_compressed_answer(model, processor, picture, text, method, keep)}
        results.append(row)
    if as_json:
        first = {k: v for k, v in results[0].items() if k in ("uncompressed", "compressed")}
        typer.echo(json.dumps({**first, "cases": results}))
        return
    table = Table(title="tokenfunnel demo — bundled VLM (DINOv2-S + SmolLM2-135M)")
    for column in ("image", "question", "model", "answer", "visual tokens", "keep", "prefill (s)"):
        table.add_column(column)
    for row in results:
        for name in ("uncompressed", "compressed"):
            if name not in row:
                continue
            out = row[name]
            label = name if name == "uncompressed" else f"{method} keep={keep:g}"
            first = name == "uncompressed"
            cells = (
                row["image"] if first else "",
                row["question"] if first else "",
                label,
                out["answer"],
                str(out["visual_tokens"]),
                f"{out.get('keep', 1.0):.3f}",
                f"{out['prefill_s']:.3f}",
            )
            table.add_row(*cells)
    Console().print(table)


@app.command()
def show(
    image: Path = typer.Option(..., "--image", help="The image to compress."),
    question: str = typer.Option(..., "--question", help="The question asked about it."),
    method: str = typer.Option("luvc", "--method", help="Compression method."),
    keep: float = typer.Option(0.25, "--keep", help="FLOP-equivalent fraction of visual tokens to keep."),
    out: Path = typer.Option(Path("kept.png"), "--out", help="Where to write the picture (PNG)."),
) -> None:
    """Draw which regions of the image survive the encoder and a few LLM layers."""
    _check_method(method, keep)
    if method == "none":
        fail("--method none compresses nothing; pick a method such as luvc")
    if not question.strip():
        fail("the question is empty: pass a non-empty --question")
    if out.suffix.lower() != ".png":
        fail(f"--out must end in .png, got {out}")
    if not out.parent.exists():
        fail(f"folder {out.parent} does not exist: create it or pick another --out")
    picture_in = _read_image(image)
    import torch

    import tokenfunnel
    from tokenfunnel.eval.scoring import prompt_positions
    from tokenfunnel.viz.kept import kept_figure, picture

    model, processor = _load(quiet=False)
    batch = processor([picture_in], [question])
    with torch.no_grad(), tokenfunnel.compress(model, method, keep=keep) as handle:
        model(**batch, position_ids=prompt_positions(batch["attention_mask"]))
        report = handle.report()
    ip = processor.llava.image_processor
    fig = kept_figure(picture(batch["pixel_values"][0], ip.image_mean, ip.image_std), report)
    fig.savefig(out, dpi=110)
    typer.echo(f"wrote {out} (keep {report['keep']:.3f}, {report['visual_tokens']} tokens after the encoder)")


@app.command("eval")
def evaluate(
    dataset: str = typer.Option(..., "--dataset", help="easyvqa or easyvqa-grid."),
    samples: int = typer.Option(300, "--samples", help="Number of test questions."),
    seed: int = typer.Option(0, "--seed", help="Seed that draws the questions (and mosaics)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per forward pass."),
    method: str = typer.Option("none", "--method", help="Compression method (none = uncompressed)."),
    keep: float = typer.Option(1.0, "--keep", help="FLOP-equivalent fraction of visual tokens to keep."),
    as_json: bool = typer.Option(False, "--json", help="Print the result rows as JSON."),
) -> None:
    """Closed-set accuracy of the bundled VLM on an easy-VQA test set, optionally compressed."""
    _check_method(method, keep)
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
        advance = lambda n: progress.advance(task, n)  # noqa: E731
        row = run_eval(model, processor, dataset, samples, seed, batch_size, advance, method=method, keep=keep)
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
