"""Token budgets: how many visual tokens enter each decoder layer, and which grid leaves the encoder.

A cascade is a non-increasing list of counts, one per decoder layer, whose mean is the requested number of
tokens. Its shape is a one-parameter family solved by bisection so any mean in range is reachable; counts are
integers whose sum is the requested total rounded to the nearest token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

SHAPES = ("linear", "geometric", "step", "flat")
STEP_DEPTHS = (0.25, 0.5, 0.75)  # stage boundaries of the "step" shape, as fractions of the ramp (PyramidDrop-like)


def _profile(shape: str, p: float, n: int, ramp: int) -> list[float]:
    """Continuous counts over ``ramp`` layers for parameter p in [0, 1]; 0 gives all zeros, 1 gives all n."""
    if shape == "linear":  # n clipped: a straight fall that reaches zero one layer after the ramp
        slope = n * p / max(1e-12, 1 - p)
        return [min(n, slope * (ramp - t)) for t in range(ramp)]
    if shape == "geometric":  # a constant ratio p between consecutive layers, starting from n * p
        return [n * p ** (t + 1) for t in range(ramp)]
    if shape == "step":  # the same ratio p at the start and at each stage boundary
        return [n * p ** (1 + sum(t >= d * ramp for d in STEP_DEPTHS)) for t in range(ramp)]
    if shape == "flat":  # one drop where the ramp begins, then the same count (FastV's schedule inside a cascade)
        return [n * p] * ramp
    raise ValueError(f"unknown cascade shape {shape!r}; use one of {SHAPES}")


def _held(shape: str, p: float, n: int, ramp: int, every: int) -> list[int]:
    """Integer counts of the profile, each held for ``every`` layers."""
    x = _profile(shape, p, n, ramp)
    return [math.floor(x[t - t % every]) for t in range(ramp)]


def cascade(
    n: int,
    layers: int,
    mean: float,
    shape: str = "linear",
    start: int = 0,
    final_zero: bool = True,
    every: int = 1,
) -> list[int]:
    """Visual tokens entering each of ``layers`` decoder layers: ``n`` before ``start``, then falling, 0 last.

    ``mean`` is the target average count per layer. ``every`` > 1 holds the count for that many layers between
    drops (fewer pruning events, less overhead; the rounding top-up may add one extra drop). Raises if the mean
    cannot be reached under the constraints.
    """
    return list(_cascade(n, layers, mean, shape, start, final_zero, every))


# pure, and asked again for every prompt of a model at one keep: the bisection (~0.5 ms) runs once per budget
@lru_cache(maxsize=256)
def _cascade(n: int, layers: int, mean: float, shape: str, start: int, final_zero: bool, every: int) -> tuple[int, ...]:
    if every < 1:
        raise ValueError(f"every must be >= 1 (layers between drops), got {every}")
    if shape not in SHAPES:
        raise ValueError(f"unknown cascade shape {shape!r}; use one of {SHAPES}")
    if layers < 1 or n < 0:
        raise ValueError(f"need layers >= 1 and n >= 0, got layers={layers}, n={n}")
    if not 0 <= start < layers:
        raise ValueError(f"start layer {start} is outside 0..{layers - 1}; pick a start layer inside the model")
    ramp = layers - start - (1 if final_zero else 0)
    low, high = n * start, n * (start + ramp)
    total = mean * layers
    if not low - 1e-9 <= total <= high + 1e-9:
        raise ValueError(
            f"a mean of {mean:.2f} tokens per layer is out of reach (between {low / layers:.2f} and "
            f"{high / layers:.2f} with {n} tokens, start layer {start}, "
            f"final_zero={final_zero}); change keep, start or final_zero"
        )
    target = round(total) - low
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(_held(shape, mid, n, ramp, every)) < target:
            lo = mid
        else:
            hi = mid
    counts = _held(shape, lo, n, ramp, every)
    # top up the earliest layers still below n: keeps the list non-increasing and hits the total exactly
    missing = target - sum(counts)
    for t in range(ramp):
        if missing <= 0:
            break
        if counts[t] < n:
            counts[t] += 1
            missing -= 1
    if missing > 0:  # cannot happen for continuous shapes; guards the invariant the docstring promises
        raise RuntimeError(f"cascade fell {missing} tokens short of its target; this is a bug")
    return tuple([n] * start + counts + ([0] if final_zero else []))


def grid_target(h: int, w: int, fraction: float) -> tuple[int, int]:
    """The grid (h', w') with about ``fraction`` of h*w cells and close to the aspect ratio of h x w."""
    if not 0 < fraction <= 1:
        raise ValueError(f"grid fraction must be in (0, 1], got {fraction}")
    scale = math.sqrt(fraction)
    cells = fraction * h * w - 1e-9
    th = min(h, max(1, round(h * scale)))
    tw = math.ceil(cells / th)
    if tw > w:  # too thin for the width: take the full width and enough rows
        tw, th = w, min(h, math.ceil(cells / w))
    return th, max(1, tw)


def drop_once(n: int, layers: int, mean: float, at: int) -> list[int]:
    """``n`` tokens before layer ``at``, then a constant count: the single-drop schedule of FastV and DART."""
    if not 0 <= at < layers:
        raise ValueError(f"drop layer {at} is outside 0..{layers - 1}; pick a layer inside the model")
    after = round((mean * layers - n * at) / (layers - at))
    if after < 0:
        raise ValueError(
            f"dropping at layer {at} of {layers} cannot go below {at * n / layers:.2f} tokens per layer "
            f"(keep {at / layers:.3f}); ask for more, or drop at an earlier layer"
        )
    return [n] * at + [min(n, after)] * (layers - at)


def pyramid(n: int, layers: int, mean: float, at: list[int]) -> list[int]:
    """PyramidDrop stages: ``n`` tokens until the first boundary, then the remaining tokens times the same ratio at
    each boundary in ``at``; the ratio is solved so the mean count per layer is ``mean``."""
    if list(at) != sorted(set(at)) or not at or at[0] < 0 or at[-1] >= layers:
        raise ValueError(f"stage boundaries must be increasing layers inside 0..{layers - 1}, got {list(at)}")

    def counts(ratio: float) -> list[int]:
        return [round(n * ratio ** sum(t >= a for a in at)) for t in range(layers)]

    low = sum(counts(0.0))
    if mean * layers < low - 1e-9:
        raise ValueError(
            f"stages starting at layer {at[0]} of {layers} cannot go below keep {low / (n * layers):.3f}; "
            "ask for more, or start the stages earlier"
        )
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(counts(mid)) < mean * layers else (lo, mid)
    best = min((lo, hi), key=lambda r: abs(sum(counts(r)) - mean * layers))
    return counts(best)


def fit_grid(h: int, w: int, cells: float, tolerance: float = 0.02) -> tuple[int, int]:
    """The most h x w-shaped grid whose cell count is within ``tolerance`` (relative, at least one cell) of
    ``cells``: what pooling or downsampling to a token budget can honour. Raises when no grid is that close."""
    slack = max(1.0, tolerance * cells)
    fits = [(th, tw) for th in range(1, h + 1) for tw in range(1, w + 1) if abs(th * tw - cells) <= slack]
    if not fits:
        raise ValueError(f"no grid of at most {h}x{w} holds {cells:.1f} tokens (within {slack:.1f})")
    # the aspect ratio nearest the original first (a squashed grid distorts the image), then the closest count
    return min(fits, key=lambda g: (round(abs(math.log(g[0] * w / (g[1] * h))), 3), abs(g[0] * g[1] - cells)))


def stages(n: int, layers: int, schedule: Sequence[tuple[float, float]]) -> list[int]:
    """Counts from a schedule of (depth fraction, kept fraction) pairs: from layer int(depth * layers) on,
    round(kept * n) of the ``n`` entering tokens remain (PVC's 100/70/50/40% at depths 0, 1/4, 1/2, 3/4)."""
    check_schedule(schedule)
    fraction = [1.0] * layers
    for depth, kept in schedule:  # a later pair that starts at the same layer overrides an earlier one
        for t in range(int(depth * layers), layers):
            fraction[t] = kept
    return [round(n * f) for f in fraction]


def check_schedule(schedule: Sequence[tuple[float, float]]) -> None:
    """A schedule is a non-empty list of (depth, kept) pairs, depths increasing in [0, 1), kept non-increasing."""
    try:
        pairs = [(float(d), float(k)) for d, k in schedule]
    except (TypeError, ValueError):
        raise ValueError(f"a schedule is a list of (depth fraction, kept fraction) pairs, got {schedule!r}") from None
    depths, kept = [d for d, _ in pairs], [k for _, k in pairs]
    if not pairs or depths != sorted(set(depths)) or not 0 <= depths[0] or depths[-1] >= 1:
        raise ValueError(f"schedule depths must increase within [0, 1), got {depths}; e.g. [(0, 1), (0.5, 0.5)]")
    if any(not 0 <= k <= 1 for k in kept) or kept != sorted(kept, reverse=True):
        raise ValueError(f"schedule kept fractions must be in [0, 1] and never grow, got {kept}")
