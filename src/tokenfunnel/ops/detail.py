"""A global view and a detail view of one image: whether a question needs the details, which part of the picture it
names, which detail tokens add something the global view lacks, and which cell each kept token stands at.

The global view is an h' x w' grid of tokens, each covering a block of the h x w detail grid (the bins of
``ops.pool.bins``, as when the image is downsampled). A detail token's novelty is 1 - cosine with the global token
of its block: what the upsampled global view does not already say about that cell.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from tokenfunnel.ops.difficulty import edge_density
from tokenfunnel.ops.pool import bins
from tokenfunnel.ops.select import best_per_group

# words that ask about small things, text or where something is: a global view loses exactly these
SPATIAL = (
    "small",
    "tiny",
    "little",
    "detail",
    "details",
    "text",
    "read",
    "written",
    "word",
    "words",
    "letter",
    "letters",
    "label",
    "sign",
    "digit",
    "digits",
    "corner",
    "top",
    "bottom",
    "left",
    "right",
    "upper",
    "lower",
    "edge",
    "border",
    "behind",
    "beside",
    "between",
    "position",
    "where",
)


def detail_reasons(
    image: Tensor,
    question: str,
    *,
    words: tuple[str, ...] = SPATIAL,
    max_words: int = 15,
    edge_threshold: float = 0.2,
    busy: float = 0.12,
) -> list[str]:
    """Why ``question`` about ``image`` (3, H, W) in [0, 1] needs the detail view; empty when the global view will
    do. Reasons: a spatial or detail word ("corner", "top-left", "text"; hyphenated words count by their parts),
    more than ``max_words`` words, or an edge density (``ops.difficulty.edge_density`` at ``edge_threshold``) above
    ``busy``."""
    lower = question.lower()
    found = re.findall(r"[a-z]+", lower)
    reasons = [f"word {w!r}" for w in dict.fromkeys(found) if w in words]
    if len(re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*", lower)) > max_words:
        reasons.append(f"more than {max_words} words")
    edges = edge_density(image, edge_threshold)
    if edges > busy:
        reasons.append(f"edge density {edges:.3f}")
    return reasons


def requires_details(
    image: Tensor,
    question: str,
    *,
    words: tuple[str, ...] = SPATIAL,
    max_words: int = 15,
    edge_threshold: float = 0.2,
    busy: float = 0.12,
) -> bool:
    """Whether ``question`` about ``image`` (3, H, W) in [0, 1] needs the detail view (see ``detail_reasons``)."""
    return bool(
        detail_reasons(image, question, words=words, max_words=max_words, edge_threshold=edge_threshold, busy=busy)
    )


# The parts of a picture a question can name, as (rows, cols) halves: 0 the first half, 1 the second, None all
_VERTICAL = {"top": 0, "upper": 0, "bottom": 1, "lower": 1}
_HORIZONTAL = {"left": 0, "right": 1}
_CORNER = re.compile(r"\b(top|upper|bottom|lower)[ -](left|right)\b")
_HALF = re.compile(r"\b(top|upper|bottom|lower|left|right)(?:[ -]hand)? (half|side|part)\b")


def named_parts(question: str) -> list[str]:
    """The parts of the picture ``question`` names, in the order named: corners ("top-left", "lower right") and
    halves ("left half", "bottom side", "right-hand part"). A lone "left" or "top" is not one ("what is left?")."""
    lower = question.lower()
    corners = list(_CORNER.finditer(lower))
    found = [(m.start(), f"{m[1]}-{m[2]}") for m in corners]
    found += [
        (m.start(), f"{m[1]} {m[2]}")
        for m in _HALF.finditer(lower)
        if not any(c.start() <= m.start() < c.end() for c in corners)
    ]
    return list(dict.fromkeys(part for _, part in sorted(found)))


def part_cells(parts: list[str], h: int, w: int, device=None) -> Tensor:
    """(h*w,) bool: the cells of an h x w grid inside any of ``parts`` (as ``named_parts`` gives them); an odd side's
    middle row or column belongs to both halves."""
    r = torch.arange(h, device=device)[:, None].expand(h, w)
    c = torch.arange(w, device=device)[None, :].expand(h, w)
    inside = torch.zeros(h, w, dtype=torch.bool, device=device)
    for part in parts:
        words = re.findall(r"[a-z]+", part)
        vertical = next((_VERTICAL[x] for x in words if x in _VERTICAL), None)
        horizontal = next((_HORIZONTAL[x] for x in words if x in _HORIZONTAL), None)
        if vertical is None and horizontal is None:
            raise ValueError(f"{part!r} names no part of a picture; expected one of named_parts' answers")
        rows = torch.ones_like(inside) if vertical is None else (2 * r < h) if vertical == 0 else (2 * r >= h - 1)
        cols = torch.ones_like(inside) if horizontal is None else (2 * c < w) if horizontal == 0 else (2 * c >= w - 1)
        inside |= rows & cols
    return inside.flatten()


def ahead(scores: Tensor, first: Tensor) -> Tensor:
    """``scores`` with every ``first`` (bool, broadcast against ``scores``) entry lifted above every other one, by more
    than their spread; the order among the first, and among the rest, is kept."""
    return scores + first.to(scores) * (scores.max() - scores.min() + 1)


def blocks(h: int, w: int, gh: int, gw: int, device=None) -> Tensor:
    """(h*w,) the global token (raster over gh x gw) whose block holds each cell of the h x w grid."""
    rows, cols = bins(h, gh, device), bins(w, gw, device)
    row = torch.repeat_interleave(torch.arange(gh, device=device), rows[:, 1] - rows[:, 0] + 1)
    col = torch.repeat_interleave(torch.arange(gw, device=device), cols[:, 1] - cols[:, 0] + 1)
    return (row[:, None] * gw + col[None, :]).flatten()


def salient(x: Tensor, block: Tensor, count: int, images: int) -> Tensor:
    """(count,) for each block, the index of its token (x (N, D), ``images`` equal-sized images one after another)
    least alike its image's mean token, the first in raster order on a tie: a real token that stands out from the
    background, where a block mean would blur a small shape into it."""
    n = x.shape[0]
    image = torch.arange(n, device=x.device) // (n // images)
    mean = torch.zeros(images, x.shape[1], device=x.device).index_add_(0, image, x.float()) / (n // images)
    far = 1 - torch.nn.functional.cosine_similarity(x.float(), mean[image], dim=-1)
    picks = best_per_group(far[None], block[None])[0].nonzero()[:, 0]
    picks = picks[block[picks].argsort()]  # in block order: the i-th pick stands for block i
    if picks.shape[0] != count:
        raise ValueError(f"every one of the {count} blocks needs a token, {picks.shape[0]} have one")
    return picks


def novelty(detail: Tensor, coarse: Tensor, block: Tensor) -> Tensor:
    """(N,) 1 - cosine of each detail token (N, D) with the global token (M, D) of its block ``block`` (N,)."""
    return 1 - torch.nn.functional.cosine_similarity(detail.float(), coarse.float()[block], dim=-1)


def unseen(detail: Tensor, coarse: Tensor) -> Tensor:
    """(N,) 1 - the best cosine of each detail token (N, D) with any global token (M, D): novelty when a detail
    token's place in the global view is unknown (a tile, whose position in the image the model is not told)."""
    a = torch.nn.functional.normalize(detail.float(), dim=-1)
    b = torch.nn.functional.normalize(coarse.float(), dim=-1)
    return 1 - (a @ b.T).max(dim=-1).values


def pick_details(score: Tensor, block: Tensor, count: int, budget: int) -> Tensor:
    """(N,) bool: the detail tokens to keep, the highest ``score`` first, so that they and the global tokens still
    needed fit in ``budget`` + ``count`` tokens. A global token whose whole block is kept as detail is not needed,
    so its slot goes to one more detail token (repeated until no block fills up)."""
    n = score.shape[0]
    order = score.argsort(descending=True, stable=True)
    area = torch.bincount(block, minlength=count)
    k = min(max(budget, 0), n)
    while True:
        chosen = torch.zeros(n, dtype=torch.bool, device=score.device)
        chosen[order[:k]] = True
        full = int((torch.bincount(block[chosen], minlength=count) == area).sum())
        grown = min(n, max(budget, 0) + full)
        if grown <= k:  # full(k) only grows with k, so this is the fixed point
            return chosen
        k = grown


def stand_ins(block: Tensor, taken: Tensor, h: int, w: int, count: int) -> Tensor:
    """(count,) the cell each global token stands at: the free cell (``taken`` False) nearest its block's centre,
    the first in raster order on a tie; -1 for a block whose cells are all taken. ``block`` (N,) and ``taken`` (N,)
    cover one or more h x w images, image after image (blocks of image f numbered from f * count / images)."""
    n = block.shape[0]
    cell = torch.arange(n, device=block.device)
    r, c = (cell % (h * w)) // w, cell % w
    ones = torch.ones_like(r, dtype=torch.float)
    # the block's centre from the mean row and column of its cells (twice it, to stay on integers)
    rc = torch.zeros(count, device=block.device).index_add_(0, block, r.float())
    cc = torch.zeros(count, device=block.device).index_add_(0, block, c.float())
    area = torch.zeros(count, device=block.device).index_add_(0, block, ones)
    dist = (2 * r - 2 * rc[block] / area[block]) ** 2 + (2 * c - 2 * cc[block] / area[block]) ** 2
    key = dist.round().long() * n + cell  # nearest first, then raster order; unique, and key % n is the cell
    big = int(key.max()) + 1
    key = key.masked_fill(taken, big)
    best = torch.full((count,), big, dtype=torch.long, device=block.device).scatter_reduce(0, block, key, "amin")
    return torch.where(best == big, torch.full_like(best, -1), best % n)
