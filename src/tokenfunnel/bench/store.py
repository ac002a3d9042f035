"""Progress of a sweep on disk, so that an interrupted sweep resumes without redoing finished work.

``OUT/bench-progress/`` holds ``config.json`` (what the sweep measures), ``accuracy/<setting>.json`` (one per
finished setting), ``profile/<setting>.json`` (token counts, FLOPs, memory, decode rate) and
``timing/<group>/prompt-<i>.json`` (one timed prompt, all settings of the group interleaved; the group is named by
the settings in it and their options, since changing them changes what ran beside what). Each part records the
options its setting ran with (defaults included): a part saved under other options is measured again. Only this
folder and ``OUT/results.json`` are read to decide whether ``OUT`` belongs to another sweep: other files in ``OUT``
are left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tokenfunnel.bench.errors import BenchError
from tokenfunnel.bench.settings import Setting

FOLDER = "bench-progress"
RESULTS = "results.json"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise BenchError(f"cannot read {path} ({error}); delete it to start that part again") from None


def _write(path: Path, value) -> None:
    """Atomically: a sweep killed mid-write leaves the old file or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(temporary, path)


# identity keys added after sweeps were stored, with the value those sweeps ran with (so they still resume)
STORED_BEFORE = {"dtype": "float32"}


def _differences(ours: dict, theirs: dict) -> list[str]:
    keys = sorted(set(ours) | set(theirs))
    return [f"{k} {theirs.get(k)!r} (now {ours.get(k)!r})" for k in keys if ours.get(k) != theirs.get(k)]


class Store:
    """The progress folder of one sweep configuration (``identity``: everything but the methods and keeps)."""

    def __init__(self, out: Path, identity: dict) -> None:
        self.out, self.identity = out, identity
        self.root = out / FOLDER
        self.options: dict[str, dict] = {}

    def check(self) -> None:
        """A BenchError when ``out`` holds results of another configuration; nothing is written here."""
        if self.out.exists() and not self.out.is_dir():
            raise BenchError(f"--out {self.out} is a file; pass a folder")
        for path, found in ((self.root / "config.json", _read(self.root / "config.json")), self._results()):
            if found is None:
                continue
            differences = _differences(self.identity, {**STORED_BEFORE, **found})
            if differences:
                raise BenchError(
                    f"{self.out} holds a sweep of another configuration ({path.name}: {'; '.join(differences)}): "
                    f"pick another --out, or delete {self.out / RESULTS} and {self.root} to start over"
                )

    def _results(self) -> tuple[Path, dict | None]:
        path = self.out / RESULTS
        found = _read(path)
        if found is None:
            return path, None
        if isinstance(found, dict) and "runs" in found:
            raise BenchError(
                f"{path} gathers several sweeps (tokenfunnel.bench.collect); pick another --out, then collect it there"
            )
        config = found.get("config") if isinstance(found, dict) else None
        if not isinstance(config, dict) or "rows" not in found:
            raise BenchError(f"{path} is not a tokenfunnel bench result; pick another --out")
        return path, {k: config.get(k, STORED_BEFORE.get(k)) for k in self.identity}

    def start(self) -> None:
        _write(self.root / "config.json", self.identity)

    def previous_settings(self) -> list[str] | None:
        """Setting ids of the last results.json written here (to tell the user when this run's differ)."""
        found = _read(self.out / RESULTS)
        return None if found is None else [Setting(r["method"], r["keep"]).id for r in found.get("rows", [])]

    # -- parts: each saved with the options its setting ran with; a part saved under other options (the method's
    # defaults changed since) reads as missing, so it is measured again --------------------------------------------
    def expect(self, options: dict[str, dict]) -> None:
        """The resolved options of each setting id (``settings.resolved_options``) this run measures with."""
        self.options = options

    def _saved(self, kind: str, setting: Setting) -> dict | None:
        return _read(self.root / kind / f"{setting.id}.json")

    def _part(self, kind: str, setting: Setting) -> dict | None:
        found = self._saved(kind, setting)
        if found is None or found.get("options") != self.options.get(setting.id):
            return None
        return found

    def _save_part(self, kind: str, setting: Setting, value: dict) -> None:
        _write(self.root / kind / f"{setting.id}.json", {**value, "options": self.options.get(setting.id)})

    def accuracy(self, setting: Setting) -> dict | None:
        return self._part("accuracy", setting)

    def saved_accuracy(self, setting: Setting) -> dict | None:
        """What a finished sweep saved for ``setting``, whatever options it ran with (for reading its answers back;
        a run that measures uses ``accuracy``, which refuses parts of other options)."""
        return self._saved("accuracy", setting)

    def save_accuracy(self, setting: Setting, value: dict) -> None:
        self._save_part("accuracy", setting, value)

    def profile(self, setting: Setting) -> dict | None:
        return self._part("profile", setting)

    def save_profile(self, setting: Setting, value: dict) -> None:
        self._save_part("profile", setting, value)

    def timing(self, settings: list[Setting], prompt: int) -> dict | None:
        return _read(self._timing_path(settings, prompt))

    def save_timing(self, settings: list[Setting], prompt: int, value: dict) -> None:
        _write(self._timing_path(settings, prompt), value)

    def _timing_path(self, settings: list[Setting], prompt: int) -> Path:
        # named by the settings and their options: a change to any of them changes what ran beside what
        named = [[s.id, self.options.get(s.id)] for s in settings]
        group = hashlib.sha1(json.dumps(named, sort_keys=True).encode()).hexdigest()[:12]
        return self.root / "timing" / group / f"prompt-{prompt}.json"
