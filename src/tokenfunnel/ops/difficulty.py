"""How hard an (image, question) pair looks, from cheap signals, and compressing a token set to a budget.

Image signals, each in [0, 1], from pixels in [0, 1]: edge density (fraction of pixels whose Sobel gradient
exceeds a threshold), colour variance (mean channel variance over its largest possible value, 0.25), and a rough
object count (connected blobs of pixels that differ from the background colour, at a quarter of the resolution).
Question signals: length in words, and whether it holds negation, counting or reasoning words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenfunnel.ops.setmerge import bipartite, group_mean

NEGATION = {"no", "not", "none", "never", "nothing", "without", "neither", "nor"}
COUNTING = ("how many", "count", "number of")
REASONING = ("why", "how", "explain")


def edge_density(pixels: Tensor, threshold: float = 0.2) -> float:
    """Fraction of pixels of ``pixels`` (3, H, W) in [0, 1] whose Sobel gradient magnitude (a unit step gives
    1.0) exceeds ``threshold``."""
    gray = pixels.float().mean(0)[None, None]
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=gray.device) / 4
    gx = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kx[None, None])
    gy = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kx.T[None, None])
    return float(((gx**2 + gy**2).sqrt() > threshold).float().mean())


def colour_variance(pixels: Tensor) -> float:
    """Mean per-channel variance of ``pixels`` (3, H, W) in [0, 1], over 0.25 (the largest it can be)."""
    return min(1.0, float(pixels.float().flatten(1).var(dim=1, unbiased=False).mean()) / 0.25)


def count_objects(pixels: Tensor, threshold: float = 0.1, min_area: int = 4, scale: int = 4) -> int:
    """Rough number of objects in ``pixels`` (3, H, W) in [0, 1]: 4-connected blobs of at least ``min_area``
    pixels (after ``scale`` x downsampling) whose colour is more than ``threshold`` (mean absolute difference)
    away from the background, taken as the median colour of the border."""
    small = F.avg_pool2d(pixels.float()[None], scale)[0] if scale > 1 else pixels.float()
    _, h, w = small.shape
    border = torch.cat([small[:, 0], small[:, -1], small[:, :, 0], small[:, :, -1]], dim=1)
    background = border.median(dim=1).values
    fg = (small - background[:, None, None]).abs().mean(0) > threshold
    # label propagation: every foreground pixel takes the smallest label among its 4-neighbours until stable
    big = h * w + 1
    label = torch.where(fg, torch.arange(h * w, device=fg.device).view(h, w).float(), float(big))
    while True:
        padded = F.pad(label[None, None], (1, 1, 1, 1), value=float(big))[0, 0]
        neighbours = torch.stack(
            [padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        new = torch.where(fg, neighbours.amin(0), float(big))
        if torch.equal(new, label):
            break
        label = new
    _, areas = label[fg].unique(return_counts=True)
    return int((areas >= min_area).sum())


def question_signals(text: str) -> dict[str, float]:
    """length (words), and 0/1 for negation, counting and reasoning words ("how" counts as reasoning unless it
    starts "how many", which is counting)."""
    lower = text.lower()
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", lower)
    negation = any(w in NEGATION or w.endswith("n't") for w in words)
    counting = any(re.search(rf"\b{c}\b", lower) for c in COUNTING)
    reasoning = any(w in ("why", "explain") for w in words) or bool(re.search(r"\bhow\b(?! many\b)", lower))
    return {
        "length": len(words),
        "negation": float(negation),
        "counting": float(counting),
        "reasoning": float(reasoning),
    }


@dataclass(frozen=True)
class Weights:
    """Difficulty = bias + mix[0] * image + mix[1] * question; image and question are weighted sums of their
    signals (the design's weights have no bias; a fit on data needs one)."""

    mix: tuple[float, float] = (0.6, 0.4)
    image: tuple[float, float, float] = (0.3, 0.2, 0.5)  # edges, colour variance, min(1, objects / objects_full)
    question: tuple[float, float, float, float] = (0.2, 0.3, 0.3, 0.2)  # min(1, words / words_full), neg, count, why
    objects_full: float = 10.0
    words_full: float = 20.0
    bias: float = 0.0


def difficulty(signals: dict[str, float], weights: Weights = Weights()) -> tuple[float, float, float]:
    """(difficulty, image part, question part) from ``signals`` (edges, colour, objects, length, negation,
    counting, reasoning), each part in [0, 1] when its weights sum to at most 1."""
    w = weights
    image = (
        w.image[0] * signals["edges"]
        + w.image[1] * signals["colour"]
        + w.image[2] * min(1.0, signals["objects"] / w.objects_full)
    )
    question = (
        w.question[0] * min(1.0, signals["length"] / w.words_full)
        + w.question[1] * signals["negation"]
        + w.question[2] * signals["counting"]
        + w.question[3] * signals["reasoning"]
    )
    return w.bias + w.mix[0] * image + w.mix[1] * question, image, question


def tier_of(value: float, bounds: Sequence[float]) -> int:
    """Index of the first bound ``value`` is below (len(bounds) when none)."""
    return next((i for i, b in enumerate(bounds) if value < b), len(bounds))


def scaled_budget(budget: int, n: int, reference: int) -> int:
    """A budget given for a ``reference``-token input, for an ``n``-token one (at least one token)."""
    return max(1, round(budget * n / reference))


@dataclass
class Reduced:
    """A token set after ``reduce_to``: features (k, D), sizes (k,) input cells in each, cells (k,) increasing."""

    features: Tensor
    sizes: Tensor
    cells: Tensor
    steps: list[str]  # "merge", "prune", "dedupe" in the order they ran


def _bipartite_merge(x: Tensor, sizes: Tensor, cells: Tensor, r: int) -> tuple[Tensor, Tensor, Tensor]:
    assign, rep = bipartite(x[None], r)
    assign, rep = assign[0], rep[0]
    merged, total = group_mean(x, sizes, assign, rep.shape[0])
    order = cells[rep].argsort()  # back into cell order, so tokens reach their placeholders in sequence order
    return merged[order], total[order], cells[rep][order]


def reduce_to(
    x: Tensor,
    cells: Tensor,
    budget: int,
    score: Callable[[Tensor, Tensor], Tensor],
    merge_keep: float = 0.7,
    prune_keep: float = 0.8,
    duplicate: float = 0.95,
) -> Reduced:
    """Bring the tokens ``x`` (N, D) at ``cells`` (N,) (increasing) down towards ``budget``: while more than twice
    over, bipartite-merge to ``merge_keep`` of them (size-weighted); while more than 1.5 times over, keep the
    ``prune_keep`` best by ``score(x, cells)``; then fold near-duplicates (cosine >= ``duplicate``) together. No step
    goes below the budget, so the result holds between ``budget`` and 1.5 x ``budget`` tokens (or all N if fewer)."""
    if budget < 1:
        raise ValueError(f"a budget must keep at least one token, got {budget}")
    sizes = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
    steps = []
    while x.shape[0] > 2 * budget:
        n = x.shape[0]
        r = min(n // 2, max(1, n - max(budget, math.ceil(merge_keep * n))))  # at least one: a few tokens still fall
        x, sizes, cells = _bipartite_merge(x, sizes, cells, r)
        steps.append("merge")
    while x.shape[0] > 1.5 * budget:
        n = x.shape[0]
        best = score(x, cells).argsort(descending=True, stable=True)[
            : min(n - 1, max(budget, math.ceil(prune_keep * n)))
        ]
        keep = best.sort().values
        x, sizes, cells = x[keep], sizes[keep], cells[keep]
        steps.append("prune")
    n = x.shape[0]
    if n > budget and n >= 2:
        m = F.normalize(x.float(), dim=-1)
        alike = (m[0::2] @ m[1::2].T).amax(dim=1) >= duplicate
        r = min(int(alike.sum()), n // 2, n - budget)
        if r:
            x, sizes, cells = _bipartite_merge(x, sizes, cells, r)
            steps.append("dedupe")
    return Reduced(x, sizes, cells, steps)
