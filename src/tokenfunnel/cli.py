"""The `tokenfunnel` command: build, demo, eval, show, bench."""

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


def _read_video(path: Path, frames: int | None, fps: float | None) -> list:
    from tokenfunnel.data.video import read_video

    try:
        return read_video(path, frames=16 if frames is None and fps is None else frames, fps=fps)
    except ValueError as error:
        fail(str(error))


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


def _compressed_answer(model, processor, image, question: str, method: str, keep: float, options: dict) -> dict:
    with _compressing(model, processor, method, keep, options) as handle:
        out = _answer(model, processor, image, question)
        report = handle.report()
    out["visual_tokens"] = report["visual_tokens"]  # after the encoder
    out["llm_visual_tokens"] = report["llm_visual_tokens"]  # entering each decoder layer
    out["keep"] = report["keep"]
    out["encoder_keep"] = report.get("encoder_keep", 1.0)
    if "llm_context_tokens" in report:  # frozen context: keys and values only, counted in keep at their share
        out["llm_context_tokens"] = report["llm_context_tokens"]
    return out


def _token_cell(out: dict) -> str:
    """Visual tokens after the encoder, and those entering the first decoder layer where a method drops there."""
    layers = out.get("llm_visual_tokens") or [out["visual_tokens"]]
    first = layers[0][0] if isinstance(layers[0], list) else layers[0]  # one list per sample when samples differ
    return str(out["visual_tokens"]) if first == out["visual_tokens"] else f"{out['visual_tokens']} → {first}"


DATASET_HELP = "easyvqa, easyvqa-grid, easyvqa-mixed, easyvqa-clips (test split), or one of them with -dev."
KEEP_HELP = "FLOP-equivalent fraction of visual tokens to keep (default {default}; pvc* take none)."


def _check_method(method: str, keep: float | None, default: float) -> float | None:
    """The keep to pass: ``default`` when none was given, None for a method whose budget follows the input."""
    from tokenfunnel.methods.registry import METHODS, takes_keep

    if method != "none" and method not in METHODS:
        fail(f"unknown method {method!r}: choose one of none, {', '.join(METHODS)}")
    if method != "none" and not takes_keep(method):
        if keep is not None:
            fail(f"{method} takes no --keep: its budget follows the input; drop --keep (the realised keep is reported)")
        return None
    keep = default if keep is None else keep
    if not 0 < keep <= 1:
        fail(f"--keep must be in (0, 1], got {keep} (e.g. --keep 0.25 keeps a quarter of the visual-token FLOPs)")
    return keep


OPTION_HELP = "A method option as NAME=VALUE (JSON value, else text), repeatable: --option view=image."


def _method_options(method: str, pairs: list[str] | None) -> dict:
    """``--option NAME=VALUE`` pairs as keyword options of ``method``'s config (values read as JSON: numbers,
    true/false, [4, 4]; anything else is text). Names are checked here, values when the method is built."""
    if not pairs:
        return {}
    if method == "none":
        fail("--option sets a compression method's option; pick a --method too")
    from dataclasses import fields

    from tokenfunnel.methods.registry import METHODS

    allowed = sorted(f.name for f in fields(METHODS[method][0]) if f.name not in ("keep", "tokenizer"))
    options = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            fail(f"--option takes NAME=VALUE, got {pair!r} (e.g. --option view=image)")
        if name not in allowed:
            fail(f"{method} has no option {name!r}: choose one of {', '.join(allowed)}")
        options[name] = option_value(text)
    return options


def option_value(text: str):
    """An option's value as given on a command line: JSON when it reads as JSON (numbers, true/false, [4, 4]), else
    the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _compressing(model, processor, method: str, keep: float | None, options: dict):
    """``tokenfunnel.compress`` with the processor's options, a bad option value as a one-line error."""
    import tokenfunnel
    from tokenfunnel.methods.registry import processor_options

    try:
        return tokenfunnel.compress(model, method, keep=keep, **processor_options(method, processor), **options)
    except (TypeError, ValueError) as error:
        fail(f"{method}: {error}")


@app.command()
def demo(
    image: Path | None = typer.Option(None, "--image", help="An image file to ask about (default: built-in cases)."),
    question: str | None = typer.Option(None, "--question", help="The question to ask about --image."),
    method: str = typer.Option("luvc", "--method", help="Compression method to show beside uncompressed, or none."),
    keep: float | None = typer.Option(None, "--keep", help=KEEP_HELP.format(default=0.25)),
    video: Path | None = typer.Option(None, "--video", help="A video file to ask about (frames read with PyAV)."),
    frames: int | None = typer.Option(None, "--frames", help="Frames sampled uniformly from --video (default 16)."),
    fps: float | None = typer.Option(None, "--fps", help="Sample --video at this rate instead of --frames."),
    option: list[str] | None = typer.Option(None, "--option", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Answer questions with the bundled VLM, uncompressed and compressed, with token counts and prefill time."""
    keep = _check_method(method, keep, 0.25)
    options = _method_options(method, option)
    if question is not None and not question.strip():
        fail("the question is empty: pass a non-empty --question")
    if image is not None and video is not None:
        fail("pass --image or --video, not both")
    if video is None and (frames is not None or fps is not None):
        fail("--frames and --fps sample a --video; pass --video PATH too")
    if video is not None:
        cases = [(str(video), _read_video(video, frames, fps), question or "What is happening in the video?")]
    elif image is not None:
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
            answer = _compressed_answer(model, processor, picture, text, method, keep, options)
            row["compressed"] = {"method": method, **answer}
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
            label = name if name == "uncompressed" else f"{method} keep={keep:g}" if keep else method
            first = name == "uncompressed"
            cells = (
                row["image"] if first else "",
                row["question"] if first else "",
                label,
                out["answer"],
                _token_cell(out),
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
    keep: float | None = typer.Option(None, "--keep", help=KEEP_HELP.format(default=0.25)),
    out: Path = typer.Option(Path("kept.png"), "--out", help="Where to write the picture (PNG)."),
    option: list[str] | None = typer.Option(None, "--option", help=OPTION_HELP),
) -> None:
    """Draw which regions of the image survive the encoder and a few LLM layers."""
    keep = _check_method(method, keep, 0.25)
    if method == "none":
        fail("--method none compresses nothing; pick a method such as luvc")
    options = _method_options(method, option)
    if not question.strip():
        fail("the question is empty: pass a non-empty --question")
    if out.suffix.lower() != ".png":
        fail(f"--out must end in .png, got {out}")
    if not out.parent.exists():
        fail(f"folder {out.parent} does not exist: create it or pick another --out")
    picture_in = _read_image(image)
    import torch

    from tokenfunnel.eval.scoring import prompt_positions
    from tokenfunnel.viz.kept import kept_figure, picture

    model, processor = _load(quiet=False)
    batch = processor([picture_in], [question])
    with torch.no_grad(), _compressing(model, processor, method, keep, options) as handle:
        model(**batch, position_ids=prompt_positions(batch["attention_mask"]))
        report = handle.report()
    ip = processor.llava.image_processor
    fig = kept_figure(picture(batch["pixel_values"][0], ip.image_mean, ip.image_std), report)
    fig.savefig(out, dpi=110)
    typer.echo(f"wrote {out} (keep {report['keep']:.3f}, {report['visual_tokens']} tokens after the encoder)")


@app.command("eval")
def evaluate(
    dataset: str = typer.Option(
        ...,
        "--dataset",
        help=DATASET_HELP,
    ),
    samples: int = typer.Option(300, "--samples", help="Number of test questions."),
    seed: int = typer.Option(0, "--seed", help="Seed that draws the questions (and mosaics)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per forward pass."),
    method: str = typer.Option("none", "--method", help="Compression method (none = uncompressed)."),
    keep: float | None = typer.Option(None, "--keep", help=KEEP_HELP.format(default=1.0)),
    option: list[str] | None = typer.Option(None, "--option", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result rows as JSON."),
) -> None:
    """Closed-set accuracy of the bundled VLM on an easy-VQA test set, optionally compressed."""
    keep = _check_method(method, keep, 1.0)
    options = _method_options(method, option)
    from tokenfunnel.data.easyvqa import DATASETS

    if dataset.removesuffix("-dev") not in DATASETS:
        fail(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}, or one of them with -dev")
    if samples <= 0:
        fail(f"--samples must be a positive number of questions, got {samples}")
    if batch_size <= 0:
        fail(f"--batch-size must be positive, got {batch_size}")
    from rich.progress import Progress

    from tokenfunnel.eval.runner import evaluate as run_eval

    model, processor = _load(quiet=as_json)
    if method != "none":
        with _compressing(model, processor, method, keep, options):
            pass  # a bad option or a keep the method cannot reach fails here, in one line, before any question
    with Progress(console=err, disable=as_json, transient=True) as progress:
        task = progress.add_task(f"evaluating on {dataset}", total=samples)
        advance = lambda n: progress.advance(task, n)  # noqa: E731
        row = run_eval(model, processor, dataset, samples, seed, batch_size, advance, method, keep, options)
    if as_json:
        typer.echo(json.dumps({"rows": [row]}))
        return
    table = Table(title=f"{dataset}: {row['samples']} questions (seed {seed})")
    for column in ("method", "keep", "accuracy", "by kind", "seconds"):
        table.add_column(column)
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in row["accuracy_by_kind"].items())
    table.add_row(row["method"], f"{row['keep']:.2f}", f"{row['accuracy']:.4f}", kinds, str(row["seconds"]))
    Console().print(table)


def _methods(text: str) -> list[str]:
    from tokenfunnel.bench.settings import available_methods

    available = available_methods()
    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if names == ["all"]:
        return available
    unknown = [m for m in names if m not in available]
    if unknown or not names:
        fail(f"unknown method {', '.join(map(repr, unknown)) or '(none given)'}: choose from {', '.join(available)}")
    return names


def _keeps(text: str) -> list[float]:
    try:
        keeps = list(dict.fromkeys(float(k) for k in text.split(",") if k.strip()))
    except ValueError:
        fail(f"--keep takes comma-separated numbers such as 0.5,0.25,0.11, got {text!r}")
    if not keeps:
        fail("--keep is empty: pass e.g. --keep 0.5,0.25,0.11")
    for keep in keeps:
        if not 0 < keep <= 1:
            fail(f"--keep must be in (0, 1], got {keep:g} (e.g. --keep 0.25 keeps a quarter of the visual-token FLOPs)")
    return keeps


@app.command()
def bench(
    model: str = typer.Option(
        "bundled", "--model", help="bundled, llava-7b-shape (random weights: timing/FLOPs only) or a model folder."
    ),
    dataset: str = typer.Option(
        "easyvqa-grid",
        "--dataset",
        help=DATASET_HELP,
    ),
    methods: str = typer.Option("all", "--methods", help="Comma-separated methods, or all; none is always run."),
    keep: str = typer.Option("0.5,0.25,0.11", "--keep", help="Comma-separated FLOP-equivalent keeps."),
    samples: int = typer.Option(200, "--samples", help="Questions scored for accuracy."),
    seed: int = typer.Option(0, "--seed", help="Seed that draws the questions."),
    timing_samples: int = typer.Option(8, "--timing-samples", help="Prompts timed (0: no timing)."),
    repeats: int = typer.Option(3, "--repeats", help="Timed prefills per prompt and setting (median)."),
    threads: int | None = typer.Option(
        None, "--threads", help="torch threads for timing (default: torch's count); ranks share them when scoring."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Questions per forward when scoring accuracy."),
    layers: int = typer.Option(4, "--layers", help="Decoder layers of llava-7b-shape."),
    device: str = typer.Option("auto", "--device", help="auto (this rank's GPU if any), cpu or cuda."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights' dtype: float32, bfloat16 or float16."),
    out: Path = typer.Option(Path("benchmarks"), "--out", help="Folder for results.{json,csv,md}, pareto.png."),
    as_json: bool = typer.Option(False, "--json", help="Also print results.json's object on stdout."),
) -> None:
    """Sweep methods x keeps: accuracy, token counts, FLOPs, memory and interleaved timings; resumable.

    Runs data-parallel under `torchrun --nproc_per_node N -m tokenfunnel bench ...` (accuracy sharded, timing
    on rank 0)."""
    import torch

    from tokenfunnel.bench import data
    from tokenfunnel.bench.distributed import device_for
    from tokenfunnel.bench.errors import BenchError
    from tokenfunnel.bench.models import DTYPES, NAMES, SHAPE, fingerprint
    from tokenfunnel.bench.provenance import machine_id
    from tokenfunnel.bench.store import Store
    from tokenfunnel.bench.sweep import BenchConfig

    chosen, keeps = _methods(methods), _keeps(keep)
    for name, value, least in (
        ("--timing-samples", timing_samples, 0),
        ("--repeats", repeats, 1),
        ("--batch-size", batch_size, 1),
        ("--layers", layers, 1),
        ("--threads", 1 if threads is None else threads, 1),
    ):
        if value < least:
            fail(f"{name} must be at least {least}, got {value}")
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda but torch sees no GPU: use --device cpu")
    if dtype not in DTYPES:
        fail(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    shape = model == SHAPE
    try:
        if not shape:
            data.check(dataset, samples)
    except BenchError as error:
        fail(str(error))
    if model not in NAMES and Path(model).expanduser().is_dir():
        model = str(Path(model).expanduser().resolve())  # one folder, one name, however it was spelled
    where = device_for(device)
    threads = threads or torch.get_num_threads()
    config = BenchConfig(
        model=model,
        dataset="synthetic" if shape else dataset,
        samples=0 if shape else samples,
        seed=seed,
        timing_samples=timing_samples,
        repeats=repeats,
        threads=threads,
        batch_size=batch_size,
        layers=layers if shape else None,
        device=where.type,
        machine=machine_id(str(where)),
        weights=fingerprint(model),
        methods=tuple(chosen),
        keeps=tuple(keeps),
        dtype=dtype,
    )
    store = Store(out, config.identity())
    try:
        store.check()
    except BenchError as error:
        fail(str(error))
    torch.set_num_threads(threads)
    _run_bench(config, store, where, as_json)


def _run_bench(config, store, where, as_json: bool) -> None:
    from dataclasses import asdict

    from tokenfunnel.bench import report
    from tokenfunnel.bench.bar import Bar
    from tokenfunnel.bench.distributed import join
    from tokenfunnel.bench.errors import BenchError
    from tokenfunnel.bench.models import DTYPES, load_model
    from tokenfunnel.bench.sweep import run_sweep
    from tokenfunnel.viz.pareto import write_pareto

    group = join(where)
    try:
        previous = store.previous_settings() if group.main else None
        current = [s.id for s in config.settings()]
        if previous is not None and previous != current:
            err.print(
                f"note: {store.out / 'results.json'} had settings {', '.join(previous)}; rewriting it with "
                f"{', '.join(current)} (finished parts are reused)",
                highlight=False,
            )
        try:
            bench_model = load_model(config.model, config.layers or 0, where, DTYPES[config.dtype])
            with Bar(err, enabled=group.main) as bar:
                rows = run_sweep(config, bench_model, store, group, bar)
        except BenchError as error:
            fail(str(error))
        if not group.main:
            return
        data = report.results(rows, {**asdict(config), "ranks": group.world})
        paths = report.write(store.out, data)
        title = f"{config.model} on {config.dataset}" + (f" ({config.samples} questions)" if config.samples else "")
        write_pareto(rows, store.out / "pareto.png", title)
    finally:
        group.leave()
    if as_json:
        typer.echo(json.dumps(data))
        return
    table = Table(title=f"tokenfunnel bench: {config.model} on {config.dataset}")
    for column in ("method", "keep", "accuracy", "LLM speedup", "FLOP-ideal", "TTFT speedup", "decode tok/s"):
        table.add_column(column)
    table.add_column("note", max_width=28, no_wrap=True, overflow="ellipsis")  # results.md has the whole reason
    for row in rows:
        cells = [row["accuracy"], row["speedup_llm_prefill"], row["flops_ideal_speedup"], row["speedup_ttft"]]
        cells.append(row["decode_tok_s"])
        text = ["—" if v is None else f"{v:.3g}" for v in cells]
        keep = "follows input" if row["keep"] is None else f"{row['keep']:g}"
        table.add_row(row["method"], keep, *text, "refused: " + row["error"] if row["error"] else "")
    Console().print(table)
    typer.echo("wrote " + ", ".join(str(p) for p in [*paths, store.out / "pareto.png"]))


def main() -> None:
    app()
