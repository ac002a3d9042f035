"""One benchmarked configuration: a method at a keep (``none`` = the uncompressed model at keep 1.0), or once,
without a keep, for methods whose budget follows the input (``pvc``: keep is then only measured)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    method: str
    keep: float | None

    @property
    def id(self) -> str:
        """Stable name for files and JSON keys, e.g. ``luvc@0.25`` (``pvc`` for a method without a keep)."""
        return self.method if self.keep is None else f"{self.method}@{self.keep:g}"

    @property
    def baseline(self) -> bool:
        return self.method == "none"

    @contextmanager
    def applied(self, model, processor=None) -> Iterator[object | None]:
        """The model compressed with this setting for the block (yields the handle; ``None`` for ``none``). Methods
        that read the question get the ``processor``'s tokenizer."""
        if self.baseline:
            yield None
            return
        import tokenfunnel
        from tokenfunnel.methods.registry import processor_options

        options = processor_options(self.method, processor)
        with tokenfunnel.compress(model, self.method, keep=self.keep, **options) as handle:
            yield handle


NONE = Setting("none", 1.0)


def resolved_options(setting: Setting, processor=None, options: dict | None = None) -> dict:
    """Every option of the setting's method as it would run with ``options`` (defaults included; the tokenizer left
    out), as plain JSON. Saved with each finished part of a sweep, so that progress measured under other defaults is
    measured again rather than reused."""
    if setting.baseline:
        return {}
    from tokenfunnel.methods.registry import make_config, processor_options

    given = {**processor_options(setting.method, processor), **(options or {})}
    config = make_config(setting.method, setting.keep, **given)
    return {f.name: _plain(getattr(config, f.name)) for f in fields(config) if f.name != "tokenizer"}


def _plain(value):
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def available_methods() -> list[str]:
    """``none`` and every registered method, read from the registry at run time."""
    from tokenfunnel.methods.registry import METHODS

    return ["none", *METHODS]


def settings_for(methods: list[str], keeps: list[float]) -> list[Setting]:
    """``none`` once (always: speedups are measured against it), then every method at every keep, in order; a
    method without a keep (its budget follows the input) once."""
    from tokenfunnel.methods.registry import takes_keep

    out = [NONE]
    for m in methods:
        if m != "none":
            out += [Setting(m, k) for k in keeps] if takes_keep(m) else [Setting(m, None)]
    return out


def refusal(model, setting: Setting, processor=None) -> str | None:
    """The message of the ValueError a method raises for a keep it cannot reach (or for a model it cannot read the
    question of: no processor), else ``None`` (nothing runs)."""
    if setting.baseline:
        return None
    try:
        with setting.applied(model, processor):
            pass
    except ValueError as error:
        return str(error)
    return None
