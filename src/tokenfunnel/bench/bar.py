"""The sweep's progress bar: one rich bar per phase (accuracy, profile, timing), drawn on stderr so that
``--json`` keeps stdout for the result alone."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tokenfunnel.bench.sweep import Steps

LABELS = {
    "accuracy": "accuracy (questions, this rank)",
    "profile": "tokens, memory, decode (settings)",
    "timing": "interleaved timing (prompt x setting)",
}


class Bar(Steps):
    def __init__(self, console: Console, enabled: bool = True) -> None:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns, console=console, disable=not enabled)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def phase(self, name: str, total: int) -> None:
        label = LABELS.get(name, name) + ("" if total else ": all stored, nothing to redo")
        self.tasks[name] = self.progress.add_task(label, total=total)

    def advance(self, name: str, count: int = 1) -> None:
        self.progress.advance(self.tasks[name], count)
