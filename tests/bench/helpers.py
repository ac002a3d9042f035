"""Shared by the bench tests: the CLI runner and the tiny sweep's arguments."""

from typer.testing import CliRunner

from tokenfunnel.cli import app

runner = CliRunner()

# The tiny sweep: 4 questions, none and luvc at keep 0.5, one timed prompt, one repeat, one thread.
TINY = [
    "bench",
    "--dataset",
    "easyvqa-grid",
    "--samples",
    "4",
    "--seed",
    "0",
    "--methods",
    "none,luvc",
    "--keep",
    "0.5",
    "--timing-samples",
    "1",
    "--repeats",
    "1",
    "--batch-size",
    "2",
    "--threads",
    "1",
]


def folder_args(folder, out) -> list:
    """The tiny sweep with ``--model PATH`` (the folder loader, no monkeypatching), printing JSON."""
    return [*TINY, "--model", folder, "--out", out, "--json"]


def invoke(args: list):
    return runner.invoke(app, [str(a) for a in args])


def one_clear_line(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
