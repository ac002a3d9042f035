"""A benchmark sweep: every setting's accuracy, token counts, FLOPs, memory and interleaved timings, resumable.

Order of work (each part stored as soon as it is done, and skipped when found stored):
1. refusals: a method that raises ValueError for a keep gets an error row; it never runs at another keep;
2. accuracy of every setting on all questions, the questions sharded over the ranks of a ``torchrun`` launch;
3. (rank 0 only, the others are done) one profile per setting on the first prompt: tokens, FLOPs, KV cache,
   peak memory, decode rate;
4. (rank 0 only) timing on the first ``timing_samples`` prompts, all settings interleaved per prompt.
Timing runs on one rank so that no other rank competes for the machine while it is measured; while scoring,
the ranks split ``threads`` between them (2 ranks x 1 thread on a 2-core machine), then rank 0 times with all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from tokenfunnel.bench import accuracy as scoring
from tokenfunnel.bench.data import load_items
from tokenfunnel.bench.distributed import Group
from tokenfunnel.bench.models import BenchModel
from tokenfunnel.bench.profile import profile
from tokenfunnel.bench.rows import build_row
from tokenfunnel.bench.settings import Setting, refusal, resolved_options, settings_for
from tokenfunnel.bench.store import Store
from tokenfunnel.bench.timing import time_prompt


@dataclass(frozen=True)
class BenchConfig:
    model: str
    dataset: str  # "synthetic" for a shape model (no questions)
    samples: int  # accuracy questions (0 for a shape model)
    seed: int
    timing_samples: int
    repeats: int
    threads: int
    batch_size: int
    layers: int | None  # decoder layers of the shape model; None for real models
    device: str
    machine: str  # provenance.machine_id(): resuming on other hardware would mix timings
    weights: str  # models.fingerprint(): resuming on retrained weights would mix models
    methods: tuple[str, ...]
    keeps: tuple[float, ...]
    dtype: str = "float32"  # of the weights and pixels; a name in DTYPES

    def identity(self) -> dict:
        """What results depend on; methods and keeps may grow between runs (finished settings are reused)."""
        out = asdict(self)
        del out["methods"], out["keeps"]
        return out

    def settings(self) -> list[Setting]:
        return settings_for(list(self.methods), list(self.keeps))


class Steps:
    """Where the sweep reports progress: a phase with a total, then steps; the CLI draws it, tests ignore it."""

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, count: int = 1) -> None:
        pass


def _accuracy(config, bench, store, group, settings, steps) -> None:
    items = load_items(config.dataset, config.samples, config.seed)
    todo = group.broadcast([s.id for s in settings if store.accuracy(s) is None])
    mine = scoring.shard(len(items), group.rank, group.world)
    steps.phase("accuracy", len(todo) * len(mine))
    for setting in settings:
        if setting.id not in todo:
            continue
        part = scoring.score_shard(
            bench, setting, items, mine, config.batch_size, lambda n: steps.advance("accuracy", n)
        )
        merged = scoring.merge(group.gather(part))
        if group.main:
            store.save_accuracy(setting, merged)


def run_sweep(
    config: BenchConfig, bench: BenchModel, store: Store, group: Group, steps: Steps | None = None
) -> list[dict] | None:
    """The result rows (on rank 0; ``None`` on the other ranks, whose part ends with the accuracy)."""
    steps = steps or Steps()
    settings = config.settings()
    errors = {s.id: refusal(bench.model, s, bench.processor) for s in settings}
    runnable = [s for s in settings if errors[s.id] is None]
    store.expect({s.id: resolved_options(s, bench.processor) for s in runnable})
    if group.main:
        store.start()
    scored = bench.processor is not None
    if scored:
        torch.set_num_threads(max(1, config.threads // group.world))  # ranks on one machine share its cores
        _accuracy(config, bench, store, group, runnable, steps)
    if not group.main:
        return None
    torch.set_num_threads(config.threads)  # the other ranks are done: measure alone, with every thread
    accuracy = {s.id: store.accuracy(s) for s in runnable} if scored else {}
    errors.update({k: v["error"] for k, v in accuracy.items() if "error" in v})
    items = load_items(config.dataset, max(config.timing_samples, 1), config.seed) if scored else []
    prompts = bench.prompts(items, max(config.timing_samples, 1))
    profiles = _profiles(bench, store, [s for s in runnable if errors[s.id] is None], prompts[0], steps)
    errors.update({k: v["error"] for k, v in profiles.items() if "error" in v})
    timed_settings = [s for s in settings if errors[s.id] is None]
    timed = _timings(config, bench, store, timed_settings, prompts[: config.timing_samples], steps)
    common = {
        "model": config.model,
        "dataset": config.dataset,
        "samples": config.samples if scored else None,
        "seed": config.seed,
        "layers": bench.decoder_layers,
        "repeats": config.repeats,
        "threads": config.threads,
        "device": str(bench.device),
        "dtype": config.dtype,
    }
    baseline = profiles.get(settings[0].id)
    return [
        build_row(s, common, errors[s.id], accuracy.get(s.id), profiles.get(s.id), baseline, timed) for s in settings
    ]


def _profiles(bench, store, settings, prompt, steps) -> dict[str, dict]:
    todo = [s for s in settings if store.profile(s) is None]
    steps.phase("profile", len(todo))
    out = {}
    for setting in settings:
        found = store.profile(setting)
        if found is None:
            try:
                found = profile(bench, prompt, setting)
            except ValueError as error:  # a method that refuses only once it sees the input
                found = {"error": str(error)}
            store.save_profile(setting, found)
            steps.advance("profile")
        out[setting.id] = found
    return out


def _timings(config, bench, store, settings, prompts, steps) -> list[dict]:
    todo = [i for i in range(len(prompts)) if store.timing(settings, i) is None]
    steps.phase("timing", len(todo) * len(settings))
    out = []
    for index, prompt in enumerate(prompts):
        found = store.timing(settings, index)
        if found is None:
            advance: Callable[[], None] = lambda: steps.advance("timing")  # noqa: E731
            found = time_prompt(bench, prompt, settings, config.repeats, advance)
            store.save_timing(settings, index, found)
        out.append(found)
    return out
